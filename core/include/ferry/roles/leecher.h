// SPDX-License-Identifier: GPL-2.0-or-later
// The destination role. Pulls every chunk of the source region with many requests in flight
// over one or more connections, keeps its progress locally (ChunkMap) so that a dropped
// connection is resumed rather than restarted, asks the seeder for dirty chunks while the
// source runs, lets a finalize policy choose the moment to finalize, and then either
//  - hybrid: resumes the application at once and serves its page faults with userfaultfd
//    (faulted chunk first, then the stale ones, then the rest), or
//  - precopy: fetches the remaining stale chunks during the downtime, then resumes it.
// It finishes when every chunk is local, optionally verifies the region byte for byte against
// the (still suspended) source, and tells the seeder it may release the source.
//
// Threads: run() is called from one thread; it starts its own workers and joins them.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "ferry/base/json.h"
#include "ferry/base/result.h"
#include "ferry/finalize/policy.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/tls.h"

namespace ferry {

enum class MigrationMode { Hybrid, PreCopy };
const char *migrationModeName(MigrationMode m);
bool parseMigrationMode(std::string_view s, MigrationMode *out);

// Connecting -> PreCopy -> Quiescing (the policy decided; in-flight requests arrive before
// Finalize) -> Finalizing -> PostCopy (hybrid) | Draining (precopy: stale chunks fetched while
// the source is suspended) -> [Verifying] -> Done. Any error ends in Failed.
enum class LeecherState { Connecting, PreCopy, Quiescing, Finalizing, PostCopy, Draining, Verifying, Done, Failed };
const char *leecherStateName(LeecherState s);

// What the application hands over at switch-over in hybrid mode: a userfaultfd created in
// its own process and registered MISSING|MINOR over its mapping of the region, whose pages
// it has not touched yet, and that mapping's address in its address space.
struct FaultTarget {
	Userfaultfd uffd;
	uintptr_t base = 0;
};

// The destination memory as LeecherHooks::prepare hands it over: the leecher's own writable
// shared mapping of it, and the file behind that mapping (-1: none; borrowed, open until the
// leecher's run() returns). With the file, a chunk the destination never held is written into
// it with pwrite(), which fills fresh pages without faulting and clearing each one first.
struct DestinationRegion {
	uint8_t *base = nullptr;
	int fd = -1;
};

struct LeecherHooks {
	// Called once the region's size is known: returns the leecher's own writable mapping of
	// the destination memory (which the application will map too).
	std::function<Result<DestinationRegion>(uint64_t size, uint32_t chunkSize)> prepare;
	// Hybrid only, called before finalize: start the application *without letting it run*
	// with its mapping of the region guarded by a userfaultfd (see FaultTarget).
	std::function<Result<FaultTarget>()> armFaults;
	// Let the application run. Called once the seeder acknowledged the switch-over: in
	// hybrid mode right after finalize, in precopy mode once the region is complete.
	std::function<Status()> resume;

	// Hooks for a destination without an application (benchmarks; tests that inspect the
	// region afterwards): prepare creates `region`, a memfd named `memfdName`, and resume has
	// nothing to let run. Pre-copy only: there is no application to arm faults in.
	static LeecherHooks intoMemory(MemfdMapping &region, const char *memfdName);
	// The same region with an "application" in this process (benchmarks of post-copy): armFaults
	// maps the memfd a second time into `app` and guards that mapping with a userfaultfd
	// (MISSING|MINOR); resume calls `resume`. Touching `app` then faults as a destination
	// application would.
	static LeecherHooks intoGuardedMemory(MemfdMapping &region, Mapping &app, const char *memfdName,
					      std::function<Status()> resume);
};

struct LeecherProgress {
	LeecherState state;
	double elapsedSec;
	uint64_t chunksTotal, chunksLocal, chunksStale, chunksMissing;
	uint64_t bytesTransferred;
	double pullBytesPerSec;     // over the last sampling interval
	double dirtyBytesPerSec;    // as reported by the seeder
	uint64_t faults;
	std::string policyStatus;
};

struct LeecherOptions {
	std::string name = "leecher";
	Endpoint seeder;
	MigrationMode mode = MigrationMode::Hybrid;
	unsigned connections = 2;
	unsigned depth = 64;                     // chunks in flight per connection (depth x chunk = bytes)
	std::string finalizePolicy = "immediate";
	PolicyOptions policy;
	std::chrono::milliseconds sampleInterval{100};
	std::chrono::milliseconds reconnectTimeout{15000};
	bool verify = false;
	// Ask the seeder to compress the pre-copy pull (zstd; it decides whether it does).
	bool compression = true;
	// Finalize at once, without pre-copy (pure post-copy), and/or serve only faults after
	// switch-over with no background pull. Both exist to measure the fault path alone.
	bool postcopyOnly = false;
	bool backgroundPull = true;
	// Post-copy faults on a connection of their own, which the fault thread and the seeder
	// busy-poll (false: faults borrow a data connection, as before; for comparison).
	bool faultChannel = true;
	// Hybrid: finalize and switch over in one round trip (FinalizeMsg::kFlagSwitchOver), so
	// the downtime holds one round trip, not two. The price: a destination lost between the
	// Finalize and its resume no longer makes the source resume (as after any switch-over,
	// the suspended source and its memory are kept). false: Finalize, then SwitchOver.
	bool switchOverAtFinalize = true;
	std::function<void(const LeecherProgress &)> onProgress; // called every sample
	// Client credentials every connection authenticates with (mutual TLS, or PSK), and the
	// seeder must prove; null: plaintext (tests, loopback benchmarks).
	std::shared_ptr<const TlsCredentials> tls;
};

struct LeecherReport {
	MigrationMode mode;
	uint64_t bytesTotal = 0;
	uint64_t bytesTransferred = 0;
	double precopyMs = 0, downtimeMs = 0, postcopyMs = 0;
	double firstPassMs = 0;         // first chunk request to every chunk received once
	uint64_t faults = 0;            // faults on chunks that were not local yet
	uint64_t localFaults = 0;       // first touches of local chunks not yet mapped
	bool switchedOverAtFinalize = false; // the one-round-trip handover was used
	uint64_t zeroChunksAtStart = 0;      // chunks the seeder reported holes: never requested
	uint64_t faultChannelChunks = 0; // chunks the fault channel brought (the rest came on data connections)
	uint64_t staleChunksAtFinalize = 0;
	uint64_t dirtyChunksAtFinalize = 0;
	uint64_t reconnects = 0;
	uint64_t compressedChunks = 0;  // chunks that arrived as ChunkZstd
	uint64_t compressedRawBytes = 0; // their size before compression
	// Chunks requested but not received when the policy chose to finalize, and when
	// Finalize was sent after letting them arrive (drainMs later; 0 unless it timed out).
	uint64_t inFlightChunksAtDecision = 0, inFlightChunksAtFinalize = 0;
	double drainMs = 0;
	uint32_t rounds = 0;
	std::string finalizeReason;
	std::string tls = "insecure"; // or the seeder's authenticated identity ("x509 CN=...")
	bool completed = false;
	std::optional<bool> verified;   // set when verification ran
	uint64_t verifyMismatchedChunks = 0;
	JsonValue toJson() const;
};

class Leecher {
public:
	Leecher(LeecherHooks hooks, LeecherOptions opts);
	~Leecher();
	Leecher(const Leecher &) = delete;
	Leecher &operator=(const Leecher &) = delete;

	Result<LeecherReport> run();

private:
	class Impl;
	std::unique_ptr<Impl> impl_;
};

} // namespace ferry
