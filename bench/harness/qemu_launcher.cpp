// SPDX-License-Identifier: GPL-2.0-or-later
#include "harness/qemu_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "ferry/sys/process.h"
#include "ferry/base/log.h"
#include "harness/console_watcher.h"

extern char **environ;

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

// Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks C++ linkage guards (fixed in 2.37).
int pidfdOpen(pid_t pid)
{
	return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

int pidfdSendSignal(int pidfd, int sig)
{
	return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

Result<std::string> readSmallFile(const std::string &path)
{
	std::ifstream in(path);
	if (!in)
		return Error::fromErrno(fmt::format("open {}", path), errno ? errno : ENOENT);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

bool isReadableFile(const std::string &path)
{
	return ::access(path.c_str(), R_OK) == 0;
}

} // namespace

Result<GuestImage> GuestImage::fromDir(const std::string &dir)
{
	GuestImage img;
	img.kernel = dir + "/vmlinuz";
	img.initrd = dir + "/initrd.img";
	for (const auto &p : {img.kernel, img.initrd})
		if (!isReadableFile(p))
			return Error::format(ENOENT, "guest image {}: {} missing (run vm-images/build-image {})",
					     dir, p, dir);
	auto append = readSmallFile(dir + "/append.txt");
	if (!append)
		return append.error().context(fmt::format("guest image {}", dir));
	img.append = append.value();
	while (!img.append.empty() && (img.append.back() == '\n' || img.append.back() == '\r' ||
				       img.append.back() == ' '))
		img.append.pop_back();
	return img;
}

Result<GuestImage> GuestImage::fromEnv()
{
	const char *dir = ::getenv("FERRY_VM_IMAGE_DIR");
	if (!dir || !*dir)
		return Error(ENOENT, "FERRY_VM_IMAGE_DIR is not set (point it at vm-images/build-image's output)");
	return fromDir(dir);
}

Result<std::vector<std::string>> QemuProcess::commandLine(const QemuConfig &cfg)
{
	if (cfg.runDir.empty())
		return Error(EINVAL, "QemuConfig.runDir is empty");
	if (cfg.image.kernel.empty())
		return Error(EINVAL, "QemuConfig.image has no kernel");
	if (cfg.memMib < 16 || cfg.memMib > (1u << 20))
		return Error::format(EINVAL, "QemuConfig.memMib {} out of range", cfg.memMib);

	std::vector<std::string> a = {cfg.qemuBinary, "-name", cfg.name, "-no-user-config", "-nodefaults",
				      "-display", "none"};
	std::string accel = cfg.accel == Accel::Kvm ? "kvm" : "tcg";
	std::string props = cfg.accelProps;
	if (cfg.accel == Accel::Tcg && props.find("thread=") == std::string::npos)
		props += std::string(props.empty() ? "" : ",") + "thread=single"; // see QemuConfig::accelProps
	if (!props.empty())
		accel += "," + props;
	a.insert(a.end(), {"-accel", accel});
	// Guest RAM in a shared backing, so another process (ferry's seeder/leecher) can map it;
	// share=on makes QEMU map it MAP_SHARED. QEMU 7.2 takes the backend via machine property.
	std::string size = fmt::format("{}M", cfg.memMib);
	if (cfg.ram == RamBackend::Private) {
		a.insert(a.end(), {"-object", fmt::format("memory-backend-ram,id=ram0,size={}", size)});
	} else if (cfg.ram == RamBackend::Memfd) {
		a.insert(a.end(), {"-object", fmt::format("memory-backend-memfd,id=ram0,size={},share=on", size)});
	} else {
		std::string path = cfg.shmPath.empty()
					   ? fmt::format("/dev/shm/ferry-{}-{}.ram", cfg.name, ::getpid())
					   : cfg.shmPath;
		a.insert(a.end(), {"-object", fmt::format("memory-backend-file,id=ram0,size={},mem-path={},share=on",
							  size, path)});
	}
	a.insert(a.end(), {"-machine", "pc,memory-backend=ram0", "-m", size, "-smp", std::to_string(cfg.cpus)});
	std::string append = cfg.image.append;
	if (!cfg.extraAppend.empty())
		append += (append.empty() ? "" : " ") + cfg.extraAppend;
	a.insert(a.end(), {"-kernel", cfg.image.kernel});
	if (!cfg.image.initrd.empty())
		a.insert(a.end(), {"-initrd", cfg.image.initrd});
	a.insert(a.end(), {"-append", append});
	// append=on: the watcher may open the (pre-created) log before QEMU does; QEMU must not
	// truncate it underneath the watcher's read offset.
	a.insert(a.end(), {"-chardev", fmt::format("file,id=con0,path={}/{}.console.log,append=on", cfg.runDir, cfg.name),
			   "-serial", "chardev:con0"});
	a.insert(a.end(), {"-qmp", fmt::format("unix:{}/{}.qmp,server=on,wait=off", cfg.runDir, cfg.name)});
	if (cfg.incomingDefer)
		a.insert(a.end(), {"-incoming", "defer"});
	a.insert(a.end(), cfg.extraArgs.begin(), cfg.extraArgs.end());
	return a;
}

Result<QemuProcess> QemuProcess::launch(const QemuConfig &cfg)
{
	FERRY_ASSIGN(auto argv, commandLine(cfg));
	std::string console = fmt::format("{}/{}.console.log", cfg.runDir, cfg.name);
	std::string qmp = fmt::format("{}/{}.qmp", cfg.runDir, cfg.name);
	std::string errLog = fmt::format("{}/{}.stderr.log", cfg.runDir, cfg.name);
	if (qmp.size() >= 108)
		return Error::format(ENAMETOOLONG, "QMP socket path too long: {}", qmp);
	{
		// Create the console log up front so a ConsoleWatcher can be attached right away.
		UniqueFd f(::open(console.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
		if (!f)
			return Error::fromErrno(fmt::format("create {}", console));
	}
	::unlink(qmp.c_str());
	FERRY_LOG(Debug, "qemu", "[qemu {}] {}", cfg.name, fmt::join(argv, " "));
	FERRY_ASSIGN(QemuProcess p, spawn(cfg.name, std::move(argv), cfg.env, errLog, qmp, console));
	if (cfg.ram == RamBackend::ShmFile) {
		p.shmPath_ = cfg.shmPath.empty() ? fmt::format("/dev/shm/ferry-{}-{}.ram", cfg.name, ::getpid())
						 : cfg.shmPath;
		p.ownsShm_ = cfg.shmPath.empty();
	}
	return p;
}

Result<QemuProcess> QemuProcess::spawn(std::string name, std::vector<std::string> argv,
				       std::vector<std::pair<std::string, std::string>> env,
				       std::string stderrLogPath, std::string qmpSocketPath,
				       std::string consoleLogPath)
{
	if (argv.empty())
		return Error(EINVAL, "spawn: empty argv");

	UniqueFd errFd(::open(stderrLogPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
	if (!errFd)
		return Error::fromErrno(fmt::format("create {}", stderrLogPath));
	UniqueFd nullFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
	if (!nullFd)
		return Error::fromErrno("open /dev/null");
	SpawnSpec spec;
	spec.exe = argv[0];
	spec.args.assign(argv.begin() + 1, argv.end());
	spec.env = std::move(env);
	spec.stdinFd = nullFd.get();
	spec.stdoutFd = errFd.get();
	spec.stderrFd = errFd.get();
	// QEMU must not inherit our sockets (e.g. another QEMU's QMP connection), or a peer
	// would not see EOF when we close them.
	spec.closeOtherFds = true;
	spec.searchPath = true;
	FERRY_ASSIGN(ChildProcess child, ferry::spawn(spec));
	pid_t pid = child.release();

	QemuProcess p;
	p.name_ = std::move(name);
	p.pid_ = pid;
	// pidfd_open cannot race with pid reuse: the child stays a zombie until we reap it.
	p.pidfd_ = UniqueFd(pidfdOpen(pid));
	if (!p.pidfd_) {
		int err = errno;
		::kill(pid, SIGKILL);
		::waitpid(pid, nullptr, 0);
		p.pid_ = -1;
		return Error::fromErrno("pidfd_open", err);
	}
	p.qmpSocketPath_ = std::move(qmpSocketPath);
	p.consoleLogPath_ = std::move(consoleLogPath);
	p.stderrLogPath_ = std::move(stderrLogPath);
	return p;
}

QemuProcess::QemuProcess(QemuProcess &&o) noexcept
	: name_(std::move(o.name_)), pid_(std::exchange(o.pid_, -1)), pidfd_(std::move(o.pidfd_)),
	  exitStatus_(o.exitStatus_), qmpSocketPath_(std::move(o.qmpSocketPath_)),
	  consoleLogPath_(std::move(o.consoleLogPath_)), stderrLogPath_(std::move(o.stderrLogPath_)),
	  shmPath_(std::move(o.shmPath_)), ownsShm_(std::exchange(o.ownsShm_, false))
{
}

QemuProcess &QemuProcess::operator=(QemuProcess &&o) noexcept
{
	if (this != &o) {
		reset();
		name_ = std::move(o.name_);
		pid_ = std::exchange(o.pid_, -1);
		pidfd_ = std::move(o.pidfd_);
		exitStatus_ = o.exitStatus_;
		qmpSocketPath_ = std::move(o.qmpSocketPath_);
		consoleLogPath_ = std::move(o.consoleLogPath_);
		stderrLogPath_ = std::move(o.stderrLogPath_);
		shmPath_ = std::move(o.shmPath_);
		ownsShm_ = std::exchange(o.ownsShm_, false);
	}
	return *this;
}

QemuProcess::~QemuProcess()
{
	reset();
}

void QemuProcess::reset()
{
	if (pid_ > 0 && !exitStatus_) {
		(void)kill(SIGKILL);
		int status = 0;
		while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
		}
		exitStatus_ = status;
	}
	pid_ = -1;
	pidfd_.reset();
	if (!qmpSocketPath_.empty())
		::unlink(qmpSocketPath_.c_str());
	if (ownsShm_ && !shmPath_.empty())
		::unlink(shmPath_.c_str());
	ownsShm_ = false;
}

bool QemuProcess::exited()
{
	if (exitStatus_)
		return true;
	if (pid_ <= 0)
		return true;
	int status = 0;
	pid_t r = ::waitpid(pid_, &status, WNOHANG);
	if (r == pid_) {
		exitStatus_ = status;
		return true;
	}
	return false;
}

Result<int> QemuProcess::waitExit(std::chrono::milliseconds timeout)
{
	const auto deadline = Clock::now() + timeout;
	while (!exited()) {
		auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
		if (left <= 0)
			return Error::format(ETIMEDOUT, "qemu {} (pid {}) still running after {} ms", name_,
					     pid_, timeout.count());
		// The pidfd becomes readable when the process exits.
		pollfd pfd{pidfd_.get(), POLLIN, 0};
		if (::poll(&pfd, 1, static_cast<int>(left)) < 0 && errno != EINTR)
			return Error::fromErrno("poll pidfd");
	}
	return *exitStatus_;
}

Status QemuProcess::kill(int sig)
{
	if (exitStatus_ || !pidfd_)
		return okStatus();
	if (pidfdSendSignal(pidfd_.get(), sig) < 0 && errno != ESRCH)
		return Error::fromErrno(fmt::format("pidfd_send_signal {} to qemu {}", sig, name_));
	return okStatus();
}

std::string QemuProcess::describeExit() const
{
	if (!exitStatus_)
		return "running";
	int s = *exitStatus_;
	if (WIFEXITED(s))
		return fmt::format("exited with status {}", WEXITSTATUS(s));
	if (WIFSIGNALED(s))
		return fmt::format("killed by signal {}", WTERMSIG(s));
	return fmt::format("wait status {:#x}", s);
}

std::string QemuProcess::stderrTail(size_t maxBytes) const
{
	auto text = readSmallFile(stderrLogPath_);
	if (!text)
		return {};
	std::string s = std::move(text).value();
	if (s.size() > maxBytes)
		s = s.substr(s.size() - maxBytes);
	while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
		s.pop_back();
	return s;
}

Result<QmpClient> QemuProcess::connectQmp(std::chrono::milliseconds timeout)
{
	if (qmpSocketPath_.empty())
		return Error(EINVAL, "connectQmp: no QMP socket configured");
	const auto deadline = Clock::now() + timeout;
	for (;;) {
		if (exited())
			return Error::format(ECHILD, "qemu {} {} before QMP was up: {}", name_, describeExit(),
					     stderrTail());
		// Short attempts, so a QEMU that dies during start-up is noticed quickly.
		auto slice = std::min<Clock::duration>(deadline - Clock::now(), std::chrono::milliseconds(200));
		auto c = QmpClient::connect(qmpSocketPath_,
					    std::max(std::chrono::duration_cast<std::chrono::milliseconds>(slice),
						     std::chrono::milliseconds(1)));
		if (c)
			return c;
		int err = c.error().code();
		if ((err != ENOENT && err != ECONNREFUSED && err != ETIMEDOUT) || Clock::now() >= deadline) {
			std::string tail = stderrTail();
			return c.error().context(fmt::format("qemu {} QMP{}{}", name_, tail.empty() ? "" : " (stderr: ",
							     tail.empty() ? "" : tail + ")"));
		}
	}
}

Result<std::string> makeRunDir(std::string_view prefix)
{
	const char *base = ::getenv("FERRY_RUN_DIR");
	std::string tmpl = fmt::format("{}/{}-XXXXXX", (base && *base) ? base : "/tmp", prefix);
	if (!::mkdtemp(tmpl.data()))
		return Error::fromErrno(fmt::format("mkdtemp {}", tmpl));
	return tmpl;
}

void removeRunDir(const std::string &dir)
{
	std::error_code ec;
	std::filesystem::remove_all(dir, ec);
}

bool kvmUsable(const GuestImage &image, std::chrono::milliseconds timeout)
{
	static std::mutex mu;
	static std::optional<bool> cached;
	std::lock_guard lock(mu);
	if (cached)
		return *cached;

	auto probe = [&]() -> Result<bool> {
		if (::access("/dev/kvm", R_OK | W_OK) != 0)
			return false;
		FERRY_ASSIGN(std::string dir, makeRunDir("ferry-kvm-probe"));
		struct Cleanup {
			std::string d;
			~Cleanup() { removeRunDir(d); }
		} cleanup{dir};
		QemuConfig cfg;
		cfg.name = "kvmprobe";
		cfg.runDir = dir;
		cfg.image = image;
		cfg.extraAppend = "ferry.mode=idle";
		cfg.memMib = 128;
		cfg.accel = Accel::Kvm;
		FERRY_ASSIGN(QemuProcess qemu, QemuProcess::launch(cfg));
		FERRY_ASSIGN(ConsoleWatcher console, ConsoleWatcher::open(qemu.consoleLogPath()));
		auto hb = console.waitHeartbeat(timeout);
		if (!hb)
			FERRY_LOG(Info, "qemu", "[kvm-probe] no heartbeat under KVM: {}", hb.error().message());
		return hb.ok();
	};
	auto r = probe();
	if (!r)
		FERRY_LOG(Info, "qemu", "[kvm-probe] probe failed: {}", r.error().message());
	cached = r.ok() && r.value();
	return *cached;
}

} // namespace ferry
