// SPDX-License-Identifier: GPL-2.0-or-later
// The destination role: run() in phases over four owners (core/roles/leecher/): the seeder
// session (Hello, control requests), the puller (data connections), the fault service
// (post-copy) and the verifier.
#include "ferry/roles/leecher.h"

#include <sys/mman.h>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/base/state_machine.h"
#include "ferry/roles/chunk_map.h"
#include "roles/leecher/fault_service.h"
#include "roles/leecher/local_region.h"
#include "roles/leecher/puller.h"
#include "roles/leecher/replies.h"
#include "roles/leecher/session.h"
#include "roles/leecher/verifier.h"

namespace ferry {

const char *migrationModeName(MigrationMode m)
{
	switch (m) {
	case MigrationMode::Hybrid: return "hybrid";
	case MigrationMode::PreCopy: return "precopy";
	}
	return "?";
}

bool parseMigrationMode(std::string_view s, MigrationMode *out)
{
	if (s == "hybrid")
		*out = MigrationMode::Hybrid;
	else if (s == "precopy")
		*out = MigrationMode::PreCopy;
	else
		return false;
	return true;
}

const char *leecherStateName(LeecherState s)
{
	switch (s) {
	case LeecherState::Connecting: return "connecting";
	case LeecherState::PreCopy: return "pre-copy";
	case LeecherState::Quiescing: return "quiescing";
	case LeecherState::Finalizing: return "finalizing";
	case LeecherState::PostCopy: return "post-copy";
	case LeecherState::Draining: return "draining";
	case LeecherState::Verifying: return "verifying";
	case LeecherState::Done: return "done";
	case LeecherState::Failed: return "failed";
	}
	return "?";
}

LeecherHooks LeecherHooks::intoMemory(MemfdMapping &region, const char *memfdName)
{
	LeecherHooks h;
	h.prepare = [&region, memfdName](uint64_t size, uint32_t) -> Result<DestinationRegion> {
		FERRY_ASSIGN(region, MemfdMapping::create(memfdName, size));
		return DestinationRegion{region.data(), region.fd.get()};
	};
	h.resume = [] { return okStatus(); };
	return h;
}

LeecherHooks LeecherHooks::intoGuardedMemory(MemfdMapping &region, Mapping &app, const char *memfdName,
					       std::function<Status()> resume)
{
	LeecherHooks h = intoMemory(region, memfdName);
	h.armFaults = [&region, &app]() -> Result<FaultTarget> {
		const size_t size = region.map.size();
		FERRY_ASSIGN(app, Mapping::map(region.fd.get(), size, PROT_READ | PROT_WRITE, MAP_SHARED));
		FERRY_ASSIGN(Userfaultfd u, Userfaultfd::create(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM));
		FERRY_TRY(u.registerRange(app.data(), size, UffdMode::Missing | UffdMode::Minor));
		return FaultTarget{std::move(u), reinterpret_cast<uintptr_t>(app.data())};
	};
	h.resume = std::move(resume);
	return h;
}

JsonValue LeecherReport::toJson() const
{
	JsonValue j = JsonValue::object();
	j.set("mode", migrationModeName(mode))
		.set("bytes_total", bytesTotal)
		.set("bytes_transferred", bytesTransferred)
		.set("precopy_ms", precopyMs)
		.set("downtime_ms", downtimeMs)
		.set("postcopy_ms", postcopyMs)
		.set("faults", faults)
		.set("local_faults", localFaults)
		.set("fault_channel_chunks", faultChannelChunks)
		.set("zero_chunks_at_start", zeroChunksAtStart)
		.set("switch_over", switchedOverAtFinalize ? "at-finalize" : "acked")
		.set("stale_chunks_at_finalize", staleChunksAtFinalize)
		.set("dirty_chunks_at_finalize", dirtyChunksAtFinalize)
		.set("rounds", uint64_t(rounds))
		.set("reconnects", reconnects)
		.set("first_pass_ms", firstPassMs)
		.set("finalize_reason", finalizeReason)
		.set("tls", tls)
		.set("completed", completed)
		.set("verified", verified ? JsonValue::boolean(*verified) : JsonValue())
		.set("compressed_chunks", compressedChunks)
		.set("compressed_raw_bytes", compressedRawBytes)
		.set("in_flight_at_decision", inFlightChunksAtDecision)
		.set("in_flight_at_finalize", inFlightChunksAtFinalize)
		.set("drain_ms", drainMs);
	return j;
}

namespace {

bool legalMove(LeecherState from, LeecherState to)
{
	switch (to) {
	case LeecherState::Connecting: return false;
	case LeecherState::PreCopy: return from == LeecherState::Connecting;
	case LeecherState::Quiescing: return from == LeecherState::PreCopy;
	case LeecherState::Finalizing: return from == LeecherState::Quiescing;
	case LeecherState::PostCopy:
	case LeecherState::Draining: return from == LeecherState::Finalizing;
	case LeecherState::Verifying: return from == LeecherState::PostCopy || from == LeecherState::Draining;
	case LeecherState::Done:
		return from == LeecherState::Verifying || from == LeecherState::PostCopy || from == LeecherState::Draining;
	case LeecherState::Failed: return from != LeecherState::Done && from != LeecherState::Failed;
	}
	return false;
}

// Longest wait for the requests in flight before Finalize: a stuck connection must not stall
// the finalize.
constexpr auto kMaxQuiesce = std::chrono::milliseconds(1000);

} // namespace

class Leecher::Impl {
public:
	Impl(LeecherHooks hooks, LeecherOptions opts)
		: hooks_(std::move(hooks)), opts_(std::move(opts)), session_(opts_, stopping_) {}
	~Impl() { shutdown(); }

	Result<LeecherReport> run();

private:
	Status transition(LeecherState to) { return state_.moveTo(to, opts_.name); }
	Result<LeecherReport> runPhases();
	Status setUp(LeecherReport &rep);
	Status preCopy(FinalizePolicy &policy, LeecherReport &rep);
	// Hybrid: also arms the application's fault guard (`target`).
	Status quiesce(LeecherReport &rep, std::optional<FaultTarget> &target);
	Result<FinalizedMsg> finalize(LeecherReport &rep);
	Status fetchStale();
	Status waitAllLocal(const char *phase);
	uint64_t bytesReceived() const { return session_.bytesReceived() + (puller_ ? puller_->bytesReceived() : 0); }
	void emitProgress(double pullRate, double dirtyRate, const std::string &policyStatus);
	void shutdown();

	LeecherHooks hooks_;
	LeecherOptions opts_;
	std::atomic<bool> stopping_{false};
	StateMachine<LeecherState> state_{LeecherState::Connecting, leecherStateName, legalMove};
	int64_t startNs_ = 0;
	SeederSession session_;
	LocalRegion region_;
	FailureLatch failure_;
	// Teardown order (reverse of declaration): the fault service stops before the puller,
	// which stops before the map closes.
	std::unique_ptr<ChunkMap> map_;
	std::unique_ptr<Puller> puller_;
	std::unique_ptr<FaultService> faults_;
	std::optional<Connection> faultChannel_; // opened in quiesce(), handed to faults_
	bool seederSwitchesAtFinalize_ = false;  // its HelloReply offered the one-step handover
};

// Session set-up: learn the region, prepare the destination memory, ask the seeder to track.
Status Leecher::Impl::setUp(LeecherReport &rep)
{
	FERRY_ASSIGN(HelloReplyMsg hello, session_.open(HelloMsg::kFeatureZeroRuns));
	rep.tls = session_.peerIdentity();
	if (hello.chunkSize == 0 || hello.chunkSize % 4096 || hello.regionSize == 0 ||
	    (hello.regionSize + hello.chunkSize - 1) / hello.chunkSize > UINT32_MAX)
		return Error::format(EPROTO, "seeder offers an unusable region ({} bytes, chunk {})", hello.regionSize,
				     hello.chunkSize);
	if (hello.flags & HelloReplyMsg::kFlagFinalized)
		return Error(EALREADY, "seeder was already finalized by another leecher");
	seederSwitchesAtFinalize_ = (hello.flags & HelloReplyMsg::kFlagSwitchOverAtFinalize) != 0;
	region_.size = hello.regionSize;
	region_.chunkSize = hello.chunkSize;
	region_.chunkCount = static_cast<uint32_t>((region_.size + region_.chunkSize - 1) / region_.chunkSize);
	region_.absent.assign(region_.chunkCount, 1);
	rep.bytesTotal = region_.size;
	FERRY_ASSIGN(DestinationRegion dest, hooks_.prepare(region_.size, region_.chunkSize));
	region_.base = dest.base;
	region_.fd = dest.fd;
	emptyDestination(region_);
	map_ = std::make_unique<ChunkMap>(region_.chunkCount);
	puller_ = std::make_unique<Puller>(session_, region_, *map_, failure_, opts_);
	// The data connections open (TCP and Hello: a round trip each) while TrackStart takes its
	// own; they ask for nothing until preCopy() lets the map go, after the zero runs are in.
	map_->setPaused(true);
	puller_->start();
	FERRY_ASSIGN(std::vector<uint8_t> started, session_.request(MsgType::TrackStart, MsgType::TrackStarted)
							   .context("start tracking"));
	FERRY_ASSIGN(TrackStartedMsg zero, decodeTrackStarted(started, region_.chunkCount));
	for (const ChunkRun &r : zero.zeroRuns) {
		map_->markZero(r.first, r.count);
		rep.zeroChunksAtStart += r.count;
	}
	return {};
}

// Pre-copy: pull while sampling the dirty rate, until the policy chooses to finalize.
Status Leecher::Impl::preCopy(FinalizePolicy &policy, LeecherReport &rep)
{
	const uint32_t chunkSize = region_.chunkSize;
	FERRY_LOG(Info, opts_.name, "pulling {} MiB in {} chunks of {} KiB over {} connection(s), {} in flight each",
		  region_.size >> 20, region_.chunkCount, chunkSize >> 10, opts_.connections, opts_.depth);
	if (opts_.postcopyOnly)
		map_->setOrder(ChunkMap::Order::UrgentOnly);
	// The first pass asks for runs of never-pulled chunks (~1 MiB a request): a request per
	// 16 KiB chunk would make a mostly-zero region cost a round of syscalls per chunk.
	map_->setMaxRun(std::min<uint32_t>({kMaxRangeChunks, opts_.depth, std::max<uint32_t>(1, (1u << 20) / chunkSize)}));
	const int64_t pullStartNs = monotonicNs();
	// The puller's connections are open (setUp); the policy may want to start pulling in a
	// quiet phase.
	map_->setPaused(!opts_.postcopyOnly && policy.holdAtStart());
	if (opts_.postcopyOnly) {
		rep.finalizeReason = "post-copy only";
		return {};
	}
	uint64_t lastBytes = 0;
	int64_t lastNs = monotonicNs();
	bool firstPassDone = false;
	for (;;) {
		// The sampling period; cut short when the first pass completes, so that a policy
		// waiting for it decides at once instead of letting stale chunks be re-pulled.
		if (firstPassDone)
			std::this_thread::sleep_for(opts_.sampleInterval);
		else
			map_->waitFirstPass(opts_.sampleInterval);
		if (auto f = failure_.get())
			return *f;
		FERRY_ASSIGN(std::vector<uint8_t> payload, session_.request(MsgType::GetDirty, MsgType::DirtyList));
		FERRY_ASSIGN(DirtyListMsg dirty, decodeDirtyList(payload, region_.chunkCount));
		const int64_t now = monotonicNs();
		map_->setClock(msBetween(startNs_, now) / 1000); // stamps what markDirty names
		map_->markDirty(dirty.chunks, dirty.pageMasks);
		const double dt = std::max(1e-3, msBetween(lastNs, now) / 1000);
		const uint64_t bytes = bytesReceived();
		const double pullRate = double(bytes - lastBytes) / dt;
		lastBytes = bytes;
		lastNs = now;
		if (!firstPassDone && map_->firstPassDone()) { // stale chunks may remain
			firstPassDone = true;
			rep.firstPassMs = msBetween(pullStartNs, map_->firstPassDoneNs());
		}
		const ChunkCounts c = map_->counts();
		const RoundStats rs{msBetween(startNs_, now) / 1000, dirty.chunks.size(),
				    uint64_t(dirty.chunks.size()) * chunkSize, c.total() - c.local,
				    (c.total() - c.local) * uint64_t(chunkSize), pullRate, firstPassDone,
				    map_->coldPendingCount() * chunkSize, ++rep.rounds,
				    puller_->inFlightChunks() * chunkSize};
		const Decision d = policy.onSample(rs);
		const bool hold = d.holdPull && !d.finalize;
		map_->setHotHold(hold ? d.holdHotSec : d.finalize ? 0 : d.hotLastSec, hold);
		map_->setPaused(hold && d.holdHotSec <= 0);
		emitProgress(pullRate, double(rs.dirtyBytes) / dt, policy.status());
		if (d.finalize) {
			rep.finalizeReason = d.reason;
			return {};
		}
	}
}

// The policy decided: stop issuing requests and let the ones in flight arrive before
// Finalize. The Finalized reply (and, in hybrid mode, the device state after it) shares the
// link with them, so with a full pipeline (depth x chunk per connection: 8 MiB is 0.3 s at
// 200 Mbit/s) it would wait behind them while the source is already suspended; letting them
// arrive first costs that time while the source still runs. Hybrid: the application is
// started meanwhile (not running), its region guarded, so the downtime does not include it.
Status Leecher::Impl::quiesce(LeecherReport &rep, std::optional<FaultTarget> &target)
{
	FERRY_TRY(transition(LeecherState::Quiescing));
	map_->setPaused(true);
	const int64_t startNs = monotonicNs();
	rep.inFlightChunksAtDecision = puller_->inFlightChunks();
	if (opts_.mode == MigrationMode::Hybrid) {
		FERRY_ASSIGN(FaultTarget t, hooks_.armFaults().context("arm fault handling"));
		target.emplace(std::move(t));
		if (opts_.faultChannel) {
			// Opened now, while the source still runs: its handshake is not downtime.
			auto c = session_.connect("fault", HelloMsg::kFeatureFaultChannel);
			if (c.ok())
				faultChannel_.emplace(std::move(c).value());
			else
				FERRY_LOG(Warn, opts_.name, "no fault channel ({}): faults share the data connections",
					  c.error().message());
		}
	}
	puller_->waitIdle(std::chrono::duration_cast<std::chrono::milliseconds>(kMaxQuiesce - std::chrono::nanoseconds(monotonicNs() - startNs)));
	if (auto f = failure_.get())
		return *f;
	rep.drainMs = msBetween(startNs, monotonicNs());
	rep.inFlightChunksAtFinalize = puller_->inFlightChunks();
	return {};
}

// The seeder suspends the source and returns the final dirty set; in hybrid mode it also
// switches over in the same step when it can (see LeecherOptions::switchOverAtFinalize).
Result<FinalizedMsg> Leecher::Impl::finalize(LeecherReport &rep)
{
	FERRY_TRY(transition(LeecherState::Finalizing));
	FinalizeMsg ask;
	if (opts_.mode == MigrationMode::Hybrid && opts_.switchOverAtFinalize && seederSwitchesAtFinalize_)
		ask.flags |= FinalizeMsg::kFlagSwitchOver;
	FERRY_ASSIGN(std::vector<uint8_t> fin, session_.request(MsgType::Finalize, MsgType::Finalized, encode(ask)));
	rep.switchedOverAtFinalize = (ask.flags & FinalizeMsg::kFlagSwitchOver) != 0;
	FERRY_ASSIGN(FinalizedMsg finalized, decodeFinalized(fin, region_.chunkCount));
	// Hybrid: only what faults ask for until the application resumes. The device state is on
	// its way meanwhile, over the same link and into the same CPUs: a background pull of the
	// stale chunks now would delay it, and with it the end of the downtime (runPhases lets
	// the background pull go after resume()).
	map_->setOrder(opts_.mode == MigrationMode::PreCopy ? ChunkMap::Order::StaleFirst : ChunkMap::Order::UrgentOnly);
	map_->markDirty(finalized.chunks, finalized.pageMasks);
	map_->setPaused(false);
	const ChunkCounts c = map_->counts();
	rep.dirtyChunksAtFinalize = finalized.chunks.size();
	rep.staleChunksAtFinalize = c.total() - c.local;
	FERRY_LOG(Info, opts_.name, "finalized ({}): {} dirty, {} chunks not local", rep.finalizeReason,
		  finalized.chunks.size(), rep.staleChunksAtFinalize);
	return finalized;
}

Status Leecher::Impl::waitAllLocal(const char *phase)
{
	while (!map_->waitAllLocal(opts_.sampleInterval)) {
		if (auto f = failure_.get())
			return f->context(phase);
		emitProgress(0, 0, phase);
	}
	return {};
}

Result<LeecherReport> Leecher::Impl::runPhases()
{
	LeecherReport rep;
	rep.mode = opts_.mode;
	startNs_ = monotonicNs();
	PolicyOptions policyOpts = opts_.policy;
	policyOpts.postCopyFollows = opts_.mode == MigrationMode::Hybrid;
	FERRY_ASSIGN(auto policy, makeFinalizePolicy(opts_.finalizePolicy, policyOpts));

	FERRY_TRY(setUp(rep));
	FERRY_TRY(transition(LeecherState::PreCopy));
	FERRY_TRY_CTX(preCopy(*policy, rep), "pre-copy");
	std::optional<FaultTarget> target;
	FERRY_TRY(quiesce(rep, target));
	const int64_t finalizeNs = monotonicNs();
	rep.precopyMs = msBetween(startNs_, finalizeNs);
	FERRY_ASSIGN(FinalizedMsg finalized, finalize(rep));

	switch (opts_.mode) {
	case MigrationMode::Hybrid:
		// Only now, with the final stale set applied, may local chunks be mapped into the
		// application: a chunk mapped earlier could have been dirtied since.
		faults_ = std::make_unique<FaultService>(region_, *map_, failure_, opts_.name,
							 [p = puller_.get()](uint32_t i) { p->requestNow(i); });
		puller_->setOnChunkLocal([f = faults_.get()](uint32_t i) { f->onChunkLocal(i); });
		FERRY_TRY(faults_->start(std::move(*target), std::exchange(faultChannel_, std::nullopt)));
		FERRY_TRY(transition(LeecherState::PostCopy));
		break;
	case MigrationMode::PreCopy:
		FERRY_TRY(transition(LeecherState::Draining));
		FERRY_TRY(waitAllLocal("draining stale chunks"));
		break;
	}
	// The switch-over point: once the seeder has acknowledged it (or answered a Finalize that
	// asked for it), the source will not be resumed any more; before it, a lost destination
	// makes the seeder roll back.
	if (!rep.switchedOverAtFinalize)
		FERRY_TRY_CTX(session_.request(MsgType::SwitchOver, MsgType::SwitchOverAck), "switch over");
	FERRY_TRY(hooks_.resume().context("resume the application"));
	const int64_t resumedNs = monotonicNs();
	if (faults_)
		faults_->startPremap();
	if (opts_.mode == MigrationMode::Hybrid && opts_.backgroundPull)
		map_->setOrder(ChunkMap::Order::StaleFirst);
	rep.downtimeMs = finalized.suspendedAtUnixNs ? double(realtimeNs() - int64_t(finalized.suspendedAtUnixNs)) / 1e6
						     : msBetween(finalizeNs, resumedNs);

	// Post-copy (hybrid): faults first, then stale chunks, then the rest.
	FERRY_TRY(waitAllLocal("post-copy"));
	if (faults_) {
		FERRY_TRY(faults_->finish());
		rep.postcopyMs = msBetween(resumedNs, monotonicNs());
		rep.faults = faults_->faults();
		rep.localFaults = faults_->localFaults();
		rep.faultChannelChunks = faults_->channelChunks();
	}
	rep.bytesTransferred = bytesReceived();
	rep.compressedChunks = puller_->compressedChunks();
	rep.compressedRawBytes = puller_->compressedRawBytes();
	rep.completed = true;

	if (opts_.verify) {
		FERRY_TRY(transition(LeecherState::Verifying));
		FERRY_ASSIGN(Connection conn, session_.connect("verify"));
		FERRY_ASSIGN(uint64_t bad, verifyAgainstSource(conn, region_, opts_.name).context("verify"));
		rep.verified = bad == 0;
		rep.verifyMismatchedChunks = bad;
	}
	FERRY_TRY(transition(LeecherState::Done));
	FERRY_TRY_CTX(session_.request(MsgType::Done, MsgType::DoneAck), "release the source");
	rep.reconnects = session_.reconnects();
	emitProgress(0, 0, "done");
	shutdown();
	session_.close(); // the seeder finishes once every connection of ours is closed
	return rep;
}

Result<LeecherReport> Leecher::Impl::run()
{
	auto rep = runPhases();
	if (!rep.ok()) {
		(void)transition(LeecherState::Failed);
		shutdown();
	}
	return rep;
}

void Leecher::Impl::emitProgress(double pullRate, double dirtyRate, const std::string &policyStatus)
{
	if (!opts_.onProgress)
		return;
	const ChunkCounts c = map_->counts();
	LeecherProgress p{state_.get(), msBetween(startNs_, monotonicNs()) / 1000, region_.chunkCount, c.local,
			  c.stale, c.missing + c.inFlight, bytesReceived(), pullRate, dirtyRate,
			  faults_ ? faults_->faults() : 0, policyStatus};
	opts_.onProgress(p);
}

void Leecher::Impl::shutdown()
{
	stopping_ = true;
	if (faults_)
		faults_->stop();
	if (puller_)
		puller_->stop();
}

Leecher::Leecher(LeecherHooks hooks, LeecherOptions opts)
	: impl_(std::make_unique<Impl>(std::move(hooks), std::move(opts)))
{
}

Leecher::~Leecher() = default;

Result<LeecherReport> Leecher::run() { return impl_->run(); }

} // namespace ferry
