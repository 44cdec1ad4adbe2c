// SPDX-License-Identifier: GPL-2.0-or-later
// A libxml2 document, owned, and the few tree helpers domain preparation and its tests use.
//
// Parsing never touches the network and neither loads DTDs nor expands external entities
// (only XML_PARSE_NONET and XML_PARSE_NOBLANKS are given), so a domain XML from a daemon or a
// file cannot make ferry read anything else. Parse errors come back as values; libxml2 prints
// nothing (XML_PARSE_NOERROR/NOWARNING).
//
// Serialization writes what libvirt writes: two-space indentation, no XML declaration
// (libxml2 quotes attributes with " where libvirt uses '; libvirt reads both).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <libxml/tree.h>

#include "ferry/base/result.h"

namespace ferry::virt {

class XmlDoc {
public:
	// EINVAL with libxml2's message and line on malformed input.
	static Result<XmlDoc> parse(std::string_view xml);

	xmlDocPtr get() const { return doc_.get(); }
	xmlNodePtr root() const { return xmlDocGetRootElement(doc_.get()); }
	Result<std::string> serialize() const; // ENOMEM only

private:
	struct Free {
		void operator()(xmlDocPtr d) const { xmlFreeDoc(d); }
	};
	std::unique_ptr<xmlDoc, Free> doc_;
};

// libxml2 speaks xmlChar (unsigned char, UTF-8); these convert at the boundary.
inline const xmlChar *xc(const char *s) { return reinterpret_cast<const xmlChar *>(s); }
inline const xmlChar *xc(const std::string &s) { return xc(s.c_str()); }

// The element children of `parent` named `name` in the namespace `nsHref` (null: in no
// namespace), in document order.
std::vector<xmlNodePtr> childElements(xmlNodePtr parent, const char *name, const char *nsHref = nullptr);
// The first of them, or null.
xmlNodePtr firstChildElement(xmlNodePtr parent, const char *name, const char *nsHref = nullptr);
// An attribute's value ("" when absent: domain XML gives no attribute an empty meaning).
std::string attribute(xmlNodePtr node, const char *name);
// The text content of an element ("" for null).
std::string textContent(xmlNodePtr node);

} // namespace ferry::virt
