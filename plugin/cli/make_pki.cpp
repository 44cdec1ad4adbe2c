// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry make-pki DIR`: a throwaway CA with a server and a client certificate in the layout
// `--tls x509:DIR` reads, for trying ferry and for tests. Production hosts get certificates
// from their own CA (docs/security.md shows certtool commands).
#include <sys/stat.h>

#include "cli/commands.h"
#include "ferry/wire/tls.h"

namespace ferry {

CommandRunner addMakePkiCommand(CLI::App &app)
{
	auto dir = std::make_shared<std::string>();
	auto *c = app.add_subcommand("make-pki", "Write a throwaway CA and server/client certificates (30 days) for --tls x509:DIR");
	c->add_option("dir", *dir, "Directory to create (0700) or fill")->required();
	return [dir] {
		if (::mkdir(dir->c_str(), 0700) < 0 && errno != EEXIST)
			return reportError("make-pki", Error::fromErrno(fmt::format("mkdir {}", *dir)));
		if (auto st = writeThrowawayPki(*dir); !st.ok())
			return reportError("make-pki", st.error());
		fmt::print("{}\n", *dir);
		return 0;
	};
}

} // namespace ferry
