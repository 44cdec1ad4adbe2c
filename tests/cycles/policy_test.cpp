// SPDX-License-Identifier: GPL-2.0-or-later
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <random>

#include "ferry/finalize/policy.h"
#include "support/synthetic_series.h"

using namespace ferry;
using ferry::test::Wave;

namespace {

constexpr double kDt = 0.1;
constexpr uint64_t kChunk = 64 * 1024;

std::unique_ptr<FinalizePolicy> make(std::string_view spec, const PolicyOptions &opts = {})
{
	auto r = makeFinalizePolicy(spec, opts);
	EXPECT_TRUE(r.ok()) << spec << ": " << (r.ok() ? "" : r.error().message());
	return r.ok() ? std::move(r).value() : nullptr;
}

RoundStats stats(uint32_t round, bool firstPassDone, uint64_t staleChunks,
		 double bandwidth = 100e6)
{
	RoundStats s;
	s.round = round;
	s.elapsedSec = round * kDt;
	s.firstPassDone = firstPassDone;
	s.staleChunks = staleChunks;
	s.staleBytes = staleChunks * kChunk;
	s.dirtyChunks = 1;
	s.dirtyBytes = kChunk;
	s.bandwidthBytesPerSec = bandwidth;
	return s;
}

struct Outcome {
	std::optional<uint32_t> round;	// the round that finalized
	double timeSec = 0;
	std::string reason;
};

// Feeds rounds 1..maxRounds produced by gen to the policy until it finalizes.
Outcome run(FinalizePolicy &p, uint32_t maxRounds, const std::function<RoundStats(uint32_t)> &gen)
{
	for (uint32_t r = 1; r <= maxRounds; r++) {
		RoundStats s = gen(r);
		Decision d = p.onSample(s);
		if (d.finalize)
			return { r, s.elapsedSec, d.reason };
	}
	return {};
}

// Round r of a simulated migration: `dirty` bytes written in it, `stale` bytes the
// destination lacks at its end, pulled at `bandwidth`.
RoundStats simulated(uint32_t r, double dirty, double stale, double bandwidth)
{
	RoundStats s;
	s.round = r;
	s.elapsedSec = r * kDt;
	s.dirtyBytes = static_cast<uint64_t>(dirty);
	s.dirtyChunks = s.dirtyBytes / kChunk;
	s.staleBytes = static_cast<uint64_t>(stale);
	s.staleChunks = (s.staleBytes + kChunk - 1) / kChunk;
	s.bandwidthBytesPerSec = bandwidth;
	return s;
}

// A migration whose guest dirties memory following `wave` (bytes per sample) while the
// destination pulls at `bandwidth`: stale bytes grow by what is dirtied and shrink by what is
// pulled. The first pass completes at firstPassSec.
Outcome simulate(FinalizePolicy &p, const Wave &wave, double bandwidth, double firstPassSec,
		 double maxSec, unsigned seed)
{
	const auto rounds = static_cast<uint32_t>(maxSec / kDt);
	std::vector<double> dirty = test::sampleWave(wave, kDt, rounds, seed);
	double stale = 0;
	return run(p, rounds, [&](uint32_t r) {
		const double d = dirty[r - 1];
		stale = std::max(0.0, stale + d - bandwidth * kDt);
		RoundStats s = simulated(r, d, stale, bandwidth);
		s.firstPassDone = s.elapsedSec >= firstPassSec;
		return s;
	});
}

// Simulates one migration per phase (the wave's phase moved by phaseStep each time) and
// expects each to finalize inside a low window, by latestSec at the latest.
struct LowWindowCase {
	Wave wave;
	double phaseStep;
	int phases;
	const char *spec;
	double bandwidth;
	double firstPassSec;
	unsigned seed; // of the first phase; one more for each next one
	double latestSec;
};

void expectFinalizesInLowWindows(LowWindowCase c)
{
	for (int k = 0; k < c.phases; k++) {
		Wave w = c.wave;
		w.phaseSec = c.phaseStep * k;
		auto p = make(c.spec);
		Outcome o = simulate(*p, w, c.bandwidth, c.firstPassSec, 60, c.seed + k);
		SCOPED_TRACE(fmt::format("phase {}: {}", w.phaseSec, p->status()));
		ASSERT_TRUE(o.round);
		EXPECT_EQ(o.reason.rfind("low window", 0), 0u) << o.reason;
		EXPECT_TRUE(w.isLow(o.timeSec + kDt / 2));
		EXPECT_LE(o.timeSec, c.latestSec);
	}
}

} // namespace

TEST(FinalizePolicy, ListsAndBuildsEveryPolicy)
{
	std::vector<std::string> names = finalizePolicyNames();
	EXPECT_EQ(names, (std::vector<std::string>{ "immediate", "threshold", "local-minimum", "cycle" }));
	for (const std::string &n : names) {
		auto p = make(n);
		ASSERT_TRUE(p);
		EXPECT_EQ(p->name(), n);
		EXPECT_FALSE(p->status().empty());
	}
}

TEST(FinalizePolicy, RejectsBadSpecsWithClearErrors)
{
	struct Case {
		const char *spec;
		const char *says;
	} cases[] = {
		{ "nope", "unknown policy 'nope' (known: immediate, threshold, local-minimum, cycle)" },
		{ "threshold:foo=1", "unknown option 'foo'" },
		{ "threshold:rounds=x", "rounds: 'x' is not a number" },
		{ "threshold:rounds=3x", "is not a number" },
		{ "threshold:rounds", "expected key=value" },
		{ "threshold:rounds=2,", "expected key=value" },
		{ "threshold:deadline=-1", "deadline -1 out of range" },
		{ "threshold:rounds=0", "rounds 0 out of range" },
		{ "local-minimum:margin=1.5", "margin" },
		{ "cycle:interval=0", "interval" },
		{ "cycle:hold=2", "hold: '2' is not off, hot or all" },
	};
	for (const Case &c : cases) {
		auto r = makeFinalizePolicy(c.spec, {});
		ASSERT_FALSE(r.ok()) << c.spec;
		EXPECT_EQ(r.error().code(), EINVAL);
		EXPECT_NE(r.error().message().find(c.says), std::string::npos)
			<< c.spec << ": " << r.error().message();
		EXPECT_NE(r.error().message().find("finalize policy"), std::string::npos);
	}
}

TEST(FinalizePolicy, SpecOptionsOverrideDefaults)
{
	PolicyOptions opts;
	opts.thresholdRounds = 50;
	auto p = make("threshold:chunks=10,rounds=1,budget=0", opts);
	ASSERT_TRUE(p);
	EXPECT_FALSE(p->onSample(stats(1, true, 10)).finalize);
	EXPECT_TRUE(p->onSample(stats(2, true, 9)).finalize);
}

TEST(ImmediatePolicy, FinalizesRightAfterFirstPass)
{
	auto p = make("immediate");
	for (uint32_t r = 1; r <= 20; r++)
		EXPECT_FALSE(p->onSample(stats(r, false, 0)).finalize) << r;
	Decision d = p->onSample(stats(21, true, 5000));
	EXPECT_TRUE(d.finalize);
	EXPECT_EQ(d.reason, "first pass done");
}

TEST(ThresholdPolicy, NeedsConsecutiveRoundsBelowThreshold)
{
	auto p = make("threshold:chunks=10,rounds=3,budget=0");
	// Below the threshold before the first pass does not count.
	EXPECT_FALSE(p->onSample(stats(1, false, 0)).finalize);
	EXPECT_FALSE(p->onSample(stats(2, false, 0)).finalize);
	const uint64_t stale[] = { 50, 5, 5, 50, 5, 5 };
	uint32_t r = 3;
	for (uint64_t c : stale)
		EXPECT_FALSE(p->onSample(stats(r++, true, c)).finalize) << "round " << r - 1;
	Decision d = p->onSample(stats(r, true, 9));
	EXPECT_TRUE(d.finalize);
	EXPECT_NE(d.reason.find("converged for 3 rounds"), std::string::npos) << d.reason;
}

TEST(ThresholdPolicy, CountsRoundsThatFitTheDowntimeBudget)
{
	// Chunk test off; 100 MB/s and a 0.3 s budget: 30 MB fits.
	auto p = make("threshold:chunks=0,rounds=2,budget=0.3");
	const uint64_t fits = 30'000'000 / kChunk, tooMany = 31'000'000 / kChunk + 1;
	EXPECT_FALSE(p->onSample(stats(1, true, fits)).finalize);
	EXPECT_FALSE(p->onSample(stats(2, true, tooMany)).finalize);
	EXPECT_FALSE(p->onSample(stats(3, true, fits)).finalize);
	EXPECT_TRUE(p->onSample(stats(4, true, fits)).finalize);

	// Unknown bandwidth never fits.
	auto q = make("threshold:chunks=0,rounds=1,budget=0.3");
	EXPECT_FALSE(q->onSample(stats(1, true, 1, 0.0)).finalize);
}

TEST(ThresholdPolicy, StopsAtTheRoundCap)
{
	auto p = make("threshold:chunks=10,max-rounds=7,deadline=1000");
	Outcome o = run(*p, 100, [](uint32_t r) { return stats(r, r > 4, 1000); });
	ASSERT_TRUE(o.round);
	EXPECT_EQ(*o.round, 4u + 7u);
	EXPECT_NE(o.reason.find("round cap"), std::string::npos) << o.reason;
}

TEST(LocalMinimumPolicy, FinalizesAtTheMinimumOfStaleBytes)
{
	// Stale bytes fall to a minimum at t = 10 s, then rise again; 2% noise.
	std::mt19937_64 rng(42);
	std::uniform_real_distribution<double> noise(0.98, 1.02);
	auto curve = [](double t) { return 1e8 * (0.2 + (t - 10) * (t - 10) / 50); };
	const double trueMin = curve(10) * 0.98;
	auto p = make("local-minimum:patience=5,margin=0.05,deadline=100");
	RoundStats last;
	Outcome o = run(*p, 300, [&](uint32_t r) {
		RoundStats s = stats(r, r >= 20, 0);
		s.staleBytes = static_cast<uint64_t>(curve(s.elapsedSec) * noise(rng));
		s.staleChunks = s.staleBytes / kChunk;
		last = s;
		return s;
	});
	ASSERT_TRUE(o.round);
	EXPECT_NE(o.reason.find("local minimum"), std::string::npos) << o.reason;
	EXPECT_GE(o.timeSec, 9.0);
	EXPECT_LE(o.timeSec, 11.0);
	EXPECT_LE(static_cast<double>(last.staleBytes), trueMin * 1.1);
}

TEST(LocalMinimumPolicy, WaitsWhileStaleBytesKeepFalling)
{
	// 2% less every round: always improving, so only the deadline may stop it.
	auto p = make("local-minimum:deadline=5");
	Outcome o = run(*p, 300, [](uint32_t r) {
		RoundStats s = stats(r, r >= 20, 0);
		s.staleBytes = static_cast<uint64_t>(1e9 * std::pow(0.98, r));
		s.staleChunks = s.staleBytes / kChunk;
		return s;
	});
	ASSERT_TRUE(o.round);
	EXPECT_NE(o.reason.find("deadline"), std::string::npos) << o.reason;
}

TEST(LocalMinimumPolicy, FinalizesAtOnceWhenNothingIsStale)
{
	auto p = make("local-minimum");
	EXPECT_FALSE(p->onSample(stats(1, true, 100)).finalize);
	Decision d = p->onSample(stats(2, true, 0));
	EXPECT_TRUE(d.finalize);
	EXPECT_EQ(d.reason, "nothing stale");
}

TEST(CyclePolicy, FinalizesInsideALowPhase)
{
	// Plenty of bandwidth, so stale bytes always fit: only the phase decides. The threshold
	// fallback is made unreachable so any decision comes from the cycle logic.
	const Wave w{ .periodSec = 4, .duty = 0.5, .noise = 0.2 };
	// 8 phases 0.5 s apart (seeds 10..17), 1 GB/s, first pass at 12 s.
	expectFinalizesInLowWindows({ w, 0.5, 8, "cycle:rounds=100000,max-rounds=100000,deadline=100",
				      1e9, 12, 10, 12 + w.periodSec });
}

TEST(CyclePolicy, UsesTheCycleEvenWhenTheFirstPassEndsEarly)
{
	// Default options; the first pass ends at 2 s, long before 2.5 periods are seen. The
	// warm-up keeps the always-converged threshold fallback from finalizing blindly.
	const Wave w{ .periodSec = 3, .duty = 0.5, .noise = 0.2 };
	// 8 phases 0.37 s apart (seeds 40..47), 1 GB/s.
	expectFinalizesInLowWindows({ w, 0.37, 8, "cycle", 1e9, 2, 40, 10 + w.periodSec });
}

TEST(CyclePolicy, WaitsForStaleBytesToFitInALowPhase)
{
	// High phase: 150 MB/s dirtied against 100 MB/s pulled, so stale bytes pile up; the low
	// phase drains them. The policy must wait until they fit 0.3 s, inside a low phase.
	const Wave w{ .periodSec = 4, .duty = 0.5, .low = 0.05e6, .high = 15e6, .noise = 0.1 };
	// 4 phases 1 s apart (seeds 20..23), first pass at 12 s.
	expectFinalizesInLowWindows({ w, 1.0, 4, "cycle:budget=0.3,rounds=100000,max-rounds=100000,deadline=100",
				      100e6, 12, 20, 12 + 2 * w.periodSec });
}

TEST(CyclePolicy, LetsWhatTheHighPhaseLeftDrainBeforeFinalizing)
{
	// High phase: 300 MB/s dirtied, 200 MB/s pulled, up to a 40 MB stale cap (the region);
	// low phase 1 MB/s. At the window's start the 40 MB left fit the 0.3 s budget already,
	// but they drain to nearly nothing within 0.3 s: the policy must take that.
	for (int k = 0; k < 4; k++) {
		Wave w{ .periodSec = 4, .duty = 0.5, .low = 0.1e6, .high = 30e6, .noise = 0.05 };
		w.phaseSec = 0.7 * k;
		auto p = make("cycle:budget=0.3,rounds=100000,max-rounds=100000,deadline=100");
		std::vector<double> dirty = test::sampleWave(w, kDt, 600, 70 + k);
		double stale = 40e6;
		Outcome o = run(*p, 600, [&](uint32_t r) {
			stale = std::min(40e6, std::max(0.0, stale + dirty[r - 1] - 200e6 * kDt));
			RoundStats s = stats(r, r >= 20, 0, 200e6);
			s.dirtyBytes = static_cast<uint64_t>(dirty[r - 1]);
			s.staleBytes = static_cast<uint64_t>(stale);
			s.staleChunks = (s.staleBytes + kChunk - 1) / kChunk;
			return s;
		});
		SCOPED_TRACE(fmt::format("phase {}: {}", w.phaseSec, p->status()));
		ASSERT_TRUE(o.round);
		EXPECT_EQ(o.reason.rfind("low window", 0), 0u) << o.reason;
		EXPECT_TRUE(w.isLow(o.timeSec + kDt / 2));
		EXPECT_LT(stale, 1e6) << o.reason;
	}
}

TEST(CyclePolicy, FindsTheCycleThroughIrregularSampleSpacing)
{
	// A migration loop's samples come 100-125 ms apart, not 100 ms: the policy re-cuts them
	// by elapsed time, so it still sees T = 4 s and finalizes in a low window.
	for (int k = 0; k < 4; k++) {
		Wave w{ .periodSec = 4, .duty = 0.5 };
		w.phaseSec = 0.8 * k;
		std::mt19937_64 rng(80 + k);
		std::uniform_real_distribution<double> gap(0.1, 0.125);
		auto p = make("cycle:rounds=100000,max-rounds=100000,deadline=100");
		double t = 0;
		std::optional<double> at;
		for (uint32_t r = 1; r <= 400 && !at; r++) {
			const double from = t;
			t += gap(rng);
			// The bytes dirtied over (from, t], integrated at 1 ms steps.
			double bytes = 0;
			for (double u = from; u < t; u += 0.001)
				bytes += w.clean(u) / kDt * std::min(0.001, t - u);
			RoundStats s = stats(r, t >= 3, 0);
			s.elapsedSec = t;
			s.dirtyBytes = static_cast<uint64_t>(bytes);
			if (p->onSample(s).finalize)
				at = t;
		}
		SCOPED_TRACE(fmt::format("phase {}: {}", w.phaseSec, p->status()));
		ASSERT_TRUE(at);
		EXPECT_TRUE(w.isLow(*at + 0.05));
		EXPECT_NE(p->status().find("T=4.0"), std::string::npos);
		EXPECT_LE(*at, 10 + 2 * w.periodSec);
	}
}

TEST(CyclePolicy, BehavesLikeThresholdOnAperiodicLoad)
{
	for (unsigned seed = 0; seed < 10; seed++) {
		auto gen = [seed]() {
			return [rng = std::mt19937_64(seed)](uint32_t r) mutable {
				std::uniform_int_distribution<uint64_t> stale(0, 200), dirty(0, 2'000'000);
				RoundStats s = stats(r, r >= 30, stale(rng), 10e6);
				s.dirtyBytes = dirty(rng);
				return s;
			};
		};
		auto cycle = make("cycle:warmup=0");
		auto threshold = make("threshold");
		Outcome oc = run(*cycle, 2000, gen());
		Outcome ot = run(*threshold, 2000, gen());
		ASSERT_TRUE(ot.round);
		EXPECT_EQ(oc.round, ot.round) << "seed " << seed << ": " << cycle->status();
		EXPECT_EQ(oc.reason, ot.reason);
		EXPECT_EQ(cycle->status().rfind("aperiodic", 0), 0u) << cycle->status();
	}
}

TEST(CyclePolicy, TrustsAnAperiodicVerdictOnlyAfterTheWarmUp)
{
	// Aperiodic load, nothing stale: threshold finalizes 3 rounds after the first pass
	// (t = 1.0 s); cycle waits until it has seen 5 s of samples, then falls back at once.
	auto gen = []() {
		return [rng = std::mt19937_64(7)](uint32_t r) mutable {
			std::uniform_int_distribution<uint64_t> dirty(0, 2'000'000);
			RoundStats s = stats(r, r >= 10, 0);
			s.dirtyBytes = dirty(rng);
			return s;
		};
	};
	auto threshold = make("threshold");
	auto cycle = make("cycle:warmup=5");
	Outcome ot = run(*threshold, 1000, gen());
	ASSERT_TRUE(ot.round);
	EXPECT_EQ(*ot.round, 12u);

	auto g = gen();
	for (uint32_t r = 1; r < 50; r++) {
		ASSERT_FALSE(cycle->onSample(g(r)).finalize) << r;
		if (r == 30) {
			EXPECT_NE(cycle->status().find("warm-up 3.0/5.0s"), std::string::npos)
				<< cycle->status();
		}
	}
	Decision d = cycle->onSample(g(50));
	EXPECT_TRUE(d.finalize);
	EXPECT_EQ(d.reason.rfind("converged for", 0), 0u) << d.reason;
}

TEST(FinalizePolicy, EveryPolicyHonoursTheDeadline)
{
	// Nothing ever converges: stale bytes stay huge and keep falling, the bandwidth is tiny,
	// the dirty rate is constant. First pass at round 20 (t = 2.0 s), deadline 5 s.
	for (const std::string &name : finalizePolicyNames()) {
		auto p = make(name + ":deadline=5");
		Outcome o = run(*p, 1000, [](uint32_t r) {
			RoundStats s = stats(r, r >= 20, 0, 1e3);
			s.staleBytes = static_cast<uint64_t>(1e10 * std::pow(0.98, r));
			s.staleChunks = s.staleBytes / kChunk;
			return s;
		});
		ASSERT_TRUE(o.round) << name;
		EXPECT_LE(o.timeSec, 2.0 + 5.0 + kDt + 1e-9) << name;
		if (name == "immediate")
			continue;
		EXPECT_GE(o.timeSec, 2.0 + 5.0 - kDt) << name;
		EXPECT_EQ(o.reason, "deadline: 5.0s since first pass") << name;
	}
}

TEST(FinalizePolicy, KeepsAFinalizeDecision)
{
	for (const std::string &name : finalizePolicyNames()) {
		auto p = make(name + ":deadline=1");
		Outcome o = run(*p, 100, [](uint32_t r) { return stats(r, true, 1'000'000, 1e3); });
		ASSERT_TRUE(o.round) << name;
		Decision again = p->onSample(stats(*o.round + 1, true, 1'000'000, 1e3));
		EXPECT_TRUE(again.finalize) << name;
		EXPECT_FALSE(again.holdPull) << name;
		EXPECT_EQ(again.reason, o.reason) << name;
		EXPECT_NE(p->status().find("finalize: "), std::string::npos) << p->status();
	}
}

// A region that is never pulled (the hold is honoured, the first pass never starts): the
// samples are the workload's dirty bytes only.
RoundStats heldSample(uint32_t r, double dirtyBytes)
{
	RoundStats s = stats(r, false, 2048);
	s.dirtyBytes = static_cast<uint64_t>(dirtyBytes);
	s.dirtyChunks = s.dirtyBytes / kChunk;
	return s;
}

TEST(CyclePolicy, HoldsPullWhileWarmingUpAndOutsideLowWindows)
{
	// Period 4 s: the analyser needs 10 s. Until then the pull is held from the start;
	// afterwards it is held exactly when no low window is under way (checked against the
	// wave's ground truth for the next interval, allowing a few misses at the edges).
	for (int k = 0; k < 4; k++) {
		Wave w{ .periodSec = 4, .duty = 0.5, .noise = 0.1 };
		w.phaseSec = 0.9 * k;
		auto p = make("cycle:warmup=10,deadline=100");
		ASSERT_TRUE(p->holdAtStart());
		std::vector<double> dirty = test::sampleWave(w, kDt, 400, 60 + k);
		unsigned periodicRounds = 0, agree = 0;
		for (uint32_t r = 1; r <= 400; r++) {
			Decision d = p->onSample(heldSample(r, dirty[r - 1]));
			ASSERT_FALSE(d.finalize);
			const double t = r * kDt;
			if (p->status().rfind("periodic", 0) != 0) {
				EXPECT_EQ(d.holdPull, t < 10 - 1e-9) << "t=" << t << ": " << p->status();
				continue;
			}
			periodicRounds++;
			agree += d.holdPull == !w.isLow(t + kDt / 2);
			if (!d.holdPull) {
				EXPECT_EQ(p->status().find("holding"), std::string::npos);
			}
		}
		SCOPED_TRACE(fmt::format("phase {}: {}", w.phaseSec, p->status()));
		EXPECT_GE(periodicRounds, 250u);
		EXPECT_GE(agree, periodicRounds * 9 / 10);
	}
}

TEST(CyclePolicy, DropsTheHoldOnAperiodicLoadAfterTheWarmUp)
{
	std::vector<double> dirty = test::whiteNoise(300, 5);
	auto p = make("cycle:warmup=5,deadline=100");
	for (uint32_t r = 1; r <= 300; r++) {
		Decision d = p->onSample(heldSample(r, dirty[r - 1]));
		EXPECT_EQ(d.holdPull, r < 50) << "round " << r << ": " << p->status();
	}
}

TEST(CyclePolicy, NeverHoldsPastTheDeadline)
{
	// Periodic load whose pull is held; whatever the analyser says, the hold ends at the
	// deadline counted from the first sample, so the first pass cannot be held forever.
	Wave w{ .periodSec = 2, .duty = 0.9 };
	std::vector<double> dirty = test::sampleWave(w, kDt, 200, 1);
	auto p = make("cycle:deadline=8");
	for (uint32_t r = 1; r <= 200; r++) {
		Decision d = p->onSample(heldSample(r, dirty[r - 1]));
		if (r * kDt >= 8 - 1e-9) {
			EXPECT_FALSE(d.holdPull) << "round " << r;
		}
	}
}

TEST(FinalizePolicy, OnlyCycleAsksToHoldPulling)
{
	Wave w;
	std::vector<double> dirty = test::sampleWave(w, kDt, 200, 2);
	for (const char *spec : { "immediate", "threshold", "local-minimum", "cycle:hold=off" }) {
		auto p = make(spec);
		EXPECT_FALSE(p->holdAtStart()) << spec;
		for (uint32_t r = 1; r <= 200; r++) {
			RoundStats s = stats(r, r >= 100, 5000, 1e3);
			s.dirtyBytes = static_cast<uint64_t>(dirty[r - 1]);
			EXPECT_FALSE(p->onSample(s).holdPull) << spec << " round " << r;
		}
	}
}

TEST(CyclePolicy, HoldsOnlyHotChunksByDefault)
{
	// While warming up every chunk is held (holdHotSec 0); once periodic, what the last
	// two periods wrote. hold=all holds every chunk throughout.
	Wave w{ .periodSec = 4, .duty = 0.5, .noise = 0.1 };
	std::vector<double> dirty = test::sampleWave(w, kDt, 300, 7);
	auto hot = make("cycle:warmup=10,deadline=100");
	auto all = make("cycle:warmup=10,deadline=100,hold=all");
	unsigned periodicHolds = 0;
	for (uint32_t r = 1; r <= 300; r++) {
		Decision h = hot->onSample(heldSample(r, dirty[r - 1]));
		Decision a = all->onSample(heldSample(r, dirty[r - 1]));
		EXPECT_EQ(a.holdHotSec, 0) << "round " << r;
		if (!h.holdPull) {
			EXPECT_EQ(h.holdHotSec, 0) << "round " << r;
			continue;
		}
		if (hot->status().rfind("periodic", 0) != 0) {
			EXPECT_EQ(h.holdHotSec, 0) << "round " << r << ": " << hot->status();
		} else {
			periodicHolds++;
			EXPECT_NEAR(h.holdHotSec, 8.0, 0.8) << "round " << r; // two periods
			EXPECT_NE(hot->status().find("holding hot chunks"), std::string::npos);
		}
	}
	EXPECT_GE(periodicHolds, 80u);
}

// A migration against a working set the high phase rewrites (the cold rest was pulled
// already): the stale set is the part of the working set the destination lacks, drained at
// `bandwidth` and refilled by the writes, never beyond the working set.
Outcome simulateWorkingSet(FinalizePolicy &p, const Wave &w, double workingSet, double bandwidth,
			   double maxSec, unsigned seed)
{
	const auto rounds = static_cast<uint32_t>(maxSec / kDt);
	std::vector<double> dirty = test::sampleWave(w, kDt, rounds, seed);
	double stale = workingSet;
	return run(p, rounds, [&](uint32_t r) {
		const double pulled = std::min(stale, bandwidth * kDt);
		stale = std::min(workingSet, stale - pulled + dirty[r - 1]);
		RoundStats s = simulated(r, dirty[r - 1], stale, pulled / kDt);
		s.firstPassDone = true;
		return s;
	});
}

// The same policy twice, with and without post-copy following the switch-over.
struct WithAndWithoutPostCopy {
	explicit WithAndWithoutPostCopy(std::string_view spec)
		: with(make(spec, PolicyOptions{ .postCopyFollows = true })), without(make(spec))
	{
	}
	std::unique_ptr<FinalizePolicy> with, without;
};

TEST(CyclePolicy, WithPostCopyFollowingFinalizesAsTheLowWindowCloses)
{
	// The working set (120 MB) takes 1.2 s to pull but the low window is 1 s: its stale
	// bytes never fit 0.3 s. Without post-copy the policy waits (for the deadline here);
	// with post-copy following it finalizes late in a low window, leaving the rest to it.
	// high: per 0.1 s, the whole working set within the high phase
	Wave w{ .periodSec = 2, .duty = 0.5, .low = 0.01e6, .high = 30e6, .noise = 0.05 };
	for (int k = 0; k < 3; k++) {
		w.phaseSec = 0.6 * k;
		WithAndWithoutPostCopy p("cycle:warmup=6,deadline=30,hold=off");
		Outcome a = simulateWorkingSet(*p.with, w, 120e6, 100e6, 40, 90 + k);
		Outcome b = simulateWorkingSet(*p.without, w, 120e6, 100e6, 40, 90 + k);
		SCOPED_TRACE(fmt::format("phase {}: {} / {}", w.phaseSec, p.with->status(), p.without->status()));
		ASSERT_TRUE(a.round);
		EXPECT_EQ(a.reason.rfind("low window", 0), 0u) << a.reason;
		EXPECT_NE(a.reason.find("left to post-copy"), std::string::npos) << a.reason;
		EXPECT_TRUE(w.isLow(a.timeSec + kDt / 2));
		EXPECT_LT(a.timeSec, 6 + 3 * w.periodSec);
		ASSERT_TRUE(b.round);
		EXPECT_EQ(b.reason.rfind("deadline", 0), 0u) << b.reason;
	}
}

TEST(CyclePolicy, ComparesStaleBytesWithThePeakPullRateNotTheCurrentOne)
{
	// After a held interval the current pull rate is zero; the link's rate is what counts.
	Wave w{ .periodSec = 2, .duty = 0.5, .low = 0.01e6, .high = 10e6, .noise = 0.05 };
	auto p = make("cycle:warmup=6,deadline=60,hold=off");
	std::vector<double> dirty = test::sampleWave(w, kDt, 400, 3);
	std::optional<Outcome> o;
	for (uint32_t r = 1; r <= 400 && !o; r++) {
		RoundStats s = stats(r, true, 2); // 128 KiB stale: fits 0.3 s at any real rate
		s.dirtyBytes = static_cast<uint64_t>(dirty[r - 1]);
		s.bandwidthBytesPerSec = r == 1 ? 100e6 : 0; // measured once, then held
		Decision d = p->onSample(s);
		if (d.finalize)
			o = Outcome{ r, s.elapsedSec, d.reason };
	}
	ASSERT_TRUE(o) << p->status();
	EXPECT_EQ(o->reason.rfind("low window", 0), 0u) << o->reason;
}

TEST(CyclePolicy, WithPostCopyFollowingAClosingWindowFinalizesBeforeTheFirstPass)
{
	// The first pass never ends within the windows (a working set too big for them): with
	// post-copy following, the policy finalizes as a low window closes that began with only
	// hot chunks left (from 10 s on); without, it waits.
	Wave w{ .periodSec = 2, .duty = 0.6, .low = 0.01e6, .high = 30e6, .noise = 0.05 };
	for (int k = 0; k < 3; k++) {
		w.phaseSec = 0.5 * k;
		WithAndWithoutPostCopy p("cycle:warmup=6,deadline=30");
		std::vector<double> dirty = test::sampleWave(w, kDt, 300, 40 + k);
		std::optional<Outcome> a;
		for (uint32_t r = 1; r <= 300; r++) {
			// Cold chunks are left until round 100, then only hot ones.
			RoundStats s = stats(r, false, 2000);
			s.coldPendingBytes = r < 100 ? s.staleBytes / 2 : 0;
			s.dirtyBytes = static_cast<uint64_t>(dirty[r - 1]);
			Decision da = p.with->onSample(s);
			if (da.finalize && !a)
				a = Outcome{ r, s.elapsedSec, da.reason };
			EXPECT_FALSE(p.without->onSample(s).finalize) << "round " << r;
		}
		SCOPED_TRACE(fmt::format("phase {}: {}", w.phaseSec, p.with->status()));
		ASSERT_TRUE(a);
		EXPECT_NE(a->reason.find("closing before the first pass"), std::string::npos) << a->reason;
		EXPECT_TRUE(w.isLow(a->timeSec + kDt / 2));
		EXPECT_GE(a->timeSec, 10.0);
		EXPECT_LT(a->timeSec, 10 + 2 * w.periodSec);
	}
}

TEST(CyclePolicy, KeepsHotChunksForAWindowThatBeginsWithTheColdRestIn)
{
	// Cold chunks are pending until 20 s. A low window that begins before then finishes the
	// cold rest and still holds the hot chunks (pulled now, they would be rewritten before the
	// window could end the first pass); one that begins after pulls them last.
	Wave w{ .periodSec = 4, .duty = 0.5, .noise = 0.1 };
	std::vector<double> dirty = test::sampleWave(w, kDt, 400, 9);
	auto p = make("cycle:warmup=10,deadline=100");
	unsigned heldInLow = 0, lenientInLow = 0, heldInLowAfter = 0;
	for (uint32_t r = 1; r <= 400; r++) {
		RoundStats s = heldSample(r, dirty[r - 1]);
		s.coldPendingBytes = s.elapsedSec < 20 ? s.staleBytes / 2 : 0;
		Decision d = p->onSample(s);
		ASSERT_FALSE(d.finalize);
		const double t = r * kDt;
		if (p->status().rfind("periodic", 0) != 0 || !w.isLow(t + kDt / 2) || !w.isLow(t - 0.5))
			continue; // well inside a low window only
		if (t < 20) {
			heldInLow += d.holdPull && d.holdHotSec > 0;
		} else if (t > 24) {
			lenientInLow += !d.holdPull && d.hotLastSec > 0;
			heldInLowAfter += d.holdPull;
		}
	}
	EXPECT_GE(heldInLow, 5u);
	EXPECT_GE(lenientInLow, 40u);
	EXPECT_LE(heldInLowAfter, 3u);
}

TEST(CyclePolicy, LeavesTimeInTheWindowForTheRequestsInFlightToArrive)
{
	// The leecher lets the requests in flight arrive before it sends Finalize. With 30 MB in
	// flight at a 100 MB/s peak that takes 0.3 s, so a closing window must finalize that
	// much earlier -- and the source must still be in the low phase when Finalize goes out.
	Wave w{.periodSec = 4, .duty = 0.4, .low = 0.01e6, .high = 30e6, .noise = 0.05};
	const PolicyOptions post{.postCopyFollows = true};
	for (int k = 0; k < 3; k++) {
		w.phaseSec = 0.7 * k;
		std::vector<double> dirty = test::sampleWave(w, kDt, 400, 70 + k);
		auto finalizeAt = [&](uint64_t inFlight) -> std::optional<Outcome> {
			auto p = make("cycle:warmup=8,deadline=60", post);
			for (uint32_t r = 1; r <= 400; r++) {
				RoundStats s = stats(r, false, 2000); // only hot chunks left, never done
				s.coldPendingBytes = 0;
				s.dirtyBytes = static_cast<uint64_t>(dirty[r - 1]);
				s.inFlightBytes = inFlight;
				Decision d = p->onSample(s);
				if (d.finalize)
					return Outcome{ r, s.elapsedSec, d.reason };
			}
			return std::nullopt;
		};
		auto idle = finalizeAt(0);
		auto busy = finalizeAt(30'000'000);
		SCOPED_TRACE(fmt::format("phase {}", w.phaseSec));
		ASSERT_TRUE(idle && busy);
		EXPECT_NE(busy->reason.find("closing"), std::string::npos) << busy->reason;
		// The same window, closed earlier by at least most of the drain time.
		EXPECT_LT(busy->timeSec, idle->timeSec - 0.2);
		EXPECT_GT(busy->timeSec, idle->timeSec - w.periodSec * (1 - w.duty));
		EXPECT_TRUE(w.isLow(busy->timeSec + 0.3 + kDt / 2)) << "Finalize after the drain would hit the high phase";
	}
}
