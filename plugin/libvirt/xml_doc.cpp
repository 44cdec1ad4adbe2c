// SPDX-License-Identifier: GPL-2.0-or-later
#include "libvirt/xml_doc.h"

#include <climits>
#include <mutex>

#include <libxml/parser.h>
#include <libxml/xmlsave.h>

namespace ferry::virt {

namespace {

// libxml2 2.9 asks multi-threaded programs to initialize it once before any use.
void initLibxml()
{
	static std::once_flag once;
	std::call_once(once, [] { xmlInitParser(); });
}

struct FreeCtxt {
	void operator()(xmlParserCtxtPtr c) const { xmlFreeParserCtxt(c); }
};

bool nsIs(const xmlNode *n, const char *nsHref)
{
	if (!nsHref)
		return n->ns == nullptr;
	return n->ns && n->ns->href && xmlStrEqual(n->ns->href, xc(nsHref));
}

} // namespace

Result<XmlDoc> XmlDoc::parse(std::string_view xml)
{
	initLibxml();
	if (xml.size() > INT_MAX)
		return Error(EINVAL, "XML document too large");
	std::unique_ptr<xmlParserCtxt, FreeCtxt> ctxt(xmlNewParserCtxt());
	if (!ctxt)
		return Error(ENOMEM, "libxml2: cannot create a parser");
	xmlDocPtr d = xmlCtxtReadMemory(ctxt.get(), xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
					XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!d) {
		const xmlError *e = xmlCtxtGetLastError(ctxt.get());
		std::string msg = e && e->message ? e->message : "not well-formed";
		while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
			msg.pop_back();
		return Error::format(EINVAL, "malformed XML (line {}): {}", e ? e->line : 0, msg);
	}
	XmlDoc doc;
	doc.doc_.reset(d);
	if (!doc.root())
		return Error(EINVAL, "malformed XML: no root element");
	return doc;
}

Result<std::string> XmlDoc::serialize() const
{
	xmlBufferPtr buf = xmlBufferCreate();
	if (!buf)
		return Error(ENOMEM, "libxml2: cannot create a buffer");
	xmlSaveCtxtPtr save = xmlSaveToBuffer(buf, "UTF-8", XML_SAVE_FORMAT | XML_SAVE_NO_DECL);
	if (!save) {
		xmlBufferFree(buf);
		return Error(ENOMEM, "libxml2: cannot create a writer");
	}
	xmlSaveDoc(save, doc_.get());
	xmlSaveClose(save);
	std::string out(reinterpret_cast<const char *>(xmlBufferContent(buf)), xmlBufferLength(buf));
	xmlBufferFree(buf);
	return out;
}

std::vector<xmlNodePtr> childElements(xmlNodePtr parent, const char *name, const char *nsHref)
{
	std::vector<xmlNodePtr> out;
	if (!parent)
		return out;
	for (xmlNodePtr n = parent->children; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE && xmlStrEqual(n->name, xc(name)) && nsIs(n, nsHref))
			out.push_back(n);
	return out;
}

xmlNodePtr firstChildElement(xmlNodePtr parent, const char *name, const char *nsHref)
{
	if (!parent)
		return nullptr;
	for (xmlNodePtr n = parent->children; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE && xmlStrEqual(n->name, xc(name)) && nsIs(n, nsHref))
			return n;
	return nullptr;
}

std::string attribute(xmlNodePtr node, const char *name)
{
	if (!node)
		return "";
	xmlChar *v = xmlGetNoNsProp(node, xc(name));
	if (!v)
		return "";
	std::string s(reinterpret_cast<const char *>(v));
	xmlFree(v);
	return s;
}

std::string textContent(xmlNodePtr node)
{
	if (!node)
		return "";
	xmlChar *v = xmlNodeGetContent(node);
	if (!v)
		return "";
	std::string s(reinterpret_cast<const char *>(v));
	xmlFree(v);
	return s;
}

} // namespace ferry::virt
