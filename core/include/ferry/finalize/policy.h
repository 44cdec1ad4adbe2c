// SPDX-License-Identifier: GPL-2.0-or-later
// Finalize policies: decide, once per sampling interval, whether the migration should finalize
// now (suspend the source and hand over the stale-chunk list).
//
// Common contract, for every policy:
//  - No policy finalizes before the first full pass is done (firstPassDone).
//  - Every policy finalizes once deadlineSec have passed since the first sample that reported
//    firstPassDone, whatever else it thinks.
//  - Once a policy has answered finalize=true it keeps answering so (the decision is latched).
//  - Called from one thread (the migration loop); not thread-safe.
//  - A policy may ask the caller to hold pulling (Decision::holdPull, holdAtStart()): it
//    expects what would be pulled now to be dirtied again before it could finalize, so the
//    transfer would be wasted. Decision::holdHotSec narrows the hold to hot chunks: those the
//    source wrote within the last holdHotSec seconds (infinity: at any time since pre-copy
//    started); chunks never written keep flowing. 0 holds every chunk. Honouring the hint
//    is optional (a caller that ignores it gets the same decisions, only more bytes); a
//    caller that honours it pauses the pull of the held never-pulled and stale chunks (never
//    of chunks a fault waits for) until a later sample clears it. holdAtStart() holds every
//    chunk until the first sample, when nothing is known yet about which are hot. Without a
//    hold, Decision::hotLastSec > 0 asks to pull the chunks written within the last
//    hotLastSec only once nothing else is left to pull (never-pulled ones first), so that
//    the first pass ends as early as it can and the working set goes last. A finalize
//    decision never holds. The hint only ever changes what is transferred, never when a
//    policy may finalize.
//
// Specs (makeFinalizePolicy):
//  "immediate"      finalize right after the first full pass.
//  "threshold"      thresholdRounds consecutive "converged" rounds, or maxRounds rounds after
//                   the first pass, whichever comes first. A round is converged when
//                   staleChunks < thresholdChunks, or when staleBytes would be sent within
//                   downtimeBudgetSec at the measured bandwidth (QEMU's convergence test).
//                   chunks=0 or budget=0 switches the respective test off.
//  "local-minimum"  finalize at a local minimum of staleBytes: no significant improvement
//                   (a drop of more than marginFraction below the value at the last
//                   significant drop) for patienceRounds samples, and the current value within
//                   marginFraction of the lowest seen. Zero stale bytes finalizes at once.
//  "cycle"          feed dirtyBytes (every sample, from pre-copy start, re-cut by elapsedSec
//                   into bins of exactly sampleIntervalSec) to a CycleAnalyser.
//                   When it calls the workload periodic, finalize inside a predicted low window
//                   with at least min(downtimeBudgetSec, half the window) of it left, once
//                   staleBytes / bandwidth fits downtimeBudgetSec and what the high phase
//                   left stale has drained (not on a window's first sample; later, once stale
//                   bytes stop falling by more than marginFraction per sample or are down to
//                   two samples' dirty bytes, or the window is about to close). maxRounds
//                   does not apply; the deadline does. When it calls the workload aperiodic,
//                   behave exactly like "threshold" -- but only once the analyser has seen
//                   cycleWarmupSec of samples: before that "aperiodic" just means "not enough
//                   data yet", and an early threshold hit would otherwise always pre-empt the
//                   cycle logic.
//                   It asks to hold every chunk while the analyser warms up (the migration
//                   begins as a monitoring phase: until a high phase has been seen, a
//                   working set written before the migration looks cold). With hold=hot
//                   (default), once the workload is periodic it holds, whenever no low
//                   window is under way, the chunks written within the last two periods
//                   (what the high phase keeps rewriting) and lets the cold rest flow; hold=all
//                   holds every chunk then too, hold=off never holds. A low window that
//                   begins with the cold rest in (coldPendingBytes within one sample's
//                   pulling) asks for the recently written chunks last (hotLastSec); one
//                   that begins with cold chunks pending keeps holding the hot ones, which
//                   the next high phase would rewrite before the first pass could end. So
//                   the working set is pulled inside a low window, after the cold rest,
//                   instead of being pulled, dirtied and pulled again.
//                   With postCopyFollows, the closing of a low window finalizes even before
//                   the first pass is done, if the window began with nothing but hot
//                   chunks left (coldPendingBytes 0): the whole window went to the working
//                   set, and the part of it no window can hold is post-copied once instead
//                   of the next high phase dirtying what this window pulled. Without it,
//                   no finalize before the first pass, as for every policy. No hold while the verdict is aperiodic
//                   after the warm-up (for good if it was never periodic), nor once
//                   deadlineSec have passed since the first sample (so a migration ends by
//                   twice the deadline at the latest).
//                   The bandwidth it compares stale bytes with is the highest pull rate
//                   measured so far: while the pull is held the current rate says nothing
//                   about the link. With postCopyFollows (the caller serves what is still
//                   stale after the switch-over, as hybrid mode does) a low window that is
//                   closing finalizes even when the stale bytes do not fit the budget:
//                   every stale page is then sent once, after the switch-over, instead of
//                   being re-dirtied by the next high phase.
// A spec is "name" or "name:key=value,key=value" with keys
//  deadline, interval, budget, chunks, rounds, max-rounds, patience, margin, warmup, hold
// (seconds for deadline/interval/budget/warmup, a fraction for margin, off|hot|all for hold),
// e.g.
//  "threshold:chunks=128,rounds=5" or "cycle:deadline=30,budget=0.2".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"

namespace ferry {

struct RoundStats {
	double elapsedSec = 0;		// since pre-copy start
	uint64_t dirtyChunks = 0;	// chunks reported dirty in this sampling interval
	uint64_t dirtyBytes = 0;
	uint64_t staleChunks = 0;	// chunks the destination still lacks or holds stale right now
	uint64_t staleBytes = 0;
	double bandwidthBytesPerSec = 0;// measured pull throughput
	bool firstPassDone = false;	// every chunk pulled at least once
	uint64_t coldPendingBytes = 0;	// of staleBytes, those outside the hot window last asked
					// for (Decision::holdHotSec/hotLastSec); all without one
	uint32_t round = 0;		// sampling rounds so far
	uint64_t inFlightBytes = 0;	// requested, not yet received: the leecher lets these
					// arrive before it sends Finalize (so that the Finalized
					// reply does not queue behind them), which takes time
};

struct Decision {
	bool finalize = false;
	std::string reason;		// why (set when finalize is true, e.g. "deadline 60.0s")
	bool holdPull = false;		// pulling now would be wasted: pause it (see above)
	double holdHotSec = 0;		// with holdPull: hold only chunks written this recently
	double hotLastSec = 0;		// no hold: pull chunks written this recently last
};

class FinalizePolicy {
public:
	virtual ~FinalizePolicy() = default;
	// Called every sampling interval, including before the first pass is done (the cycle
	// policy learns from those samples).
	virtual Decision onSample(const RoundStats &s) = 0;
	// Whether pulling should be held from the very start, before the first sample.
	virtual bool holdAtStart() const { return false; }
	// One short line for progress output (e.g. the analyser verdict).
	virtual std::string status() const = 0;
	virtual const char *name() const = 0;
};

struct PolicyOptions {
	double deadlineSec = 60;	// finalize anyway after this (counted from first pass done)
	double sampleIntervalSec = 0.1;
	double downtimeBudgetSec = 0.3;	// for `cycle` and `threshold`
	uint64_t thresholdChunks = 64;
	uint32_t thresholdRounds = 3;
	uint32_t maxRounds = 200;	// rounds after the first pass (threshold, cycle when aperiodic)
	uint32_t patienceRounds = 5;	// local-minimum: samples without improvement
	double marginFraction = 0.05;	// local-minimum: "within a small margin of the minimum"
	double cycleWarmupSec = 10;	// cycle: samples needed before "aperiodic" is trusted
					// (10 s shows 2.5 periods of up to 4 s)
	enum class Hold { Off, Hot, All };
	Hold cycleHold = Hold::Hot;	// cycle: what to hold outside low windows
	bool postCopyFollows = false;	// stale chunks can be served after the switch-over
};

// Builds a policy from a spec (see above). Errors (EINVAL): unknown name, unknown key,
// malformed or out-of-range value.
Result<std::unique_ptr<FinalizePolicy>> makeFinalizePolicy(std::string_view spec,
							   const PolicyOptions &opts);

// The policy names makeFinalizePolicy accepts, for --help and error messages.
std::vector<std::string> finalizePolicyNames();

} // namespace ferry
