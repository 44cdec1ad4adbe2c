// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/finalize/policy.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ferry/cycles/analyser.h"

namespace ferry {

namespace {

constexpr const char *kPolicyNames[] = { "immediate", "threshold", "local-minimum", "cycle" };

double mib(uint64_t bytes)
{
	return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

// Would the stale bytes go over the link within the downtime budget? An unknown (zero)
// bandwidth never fits, except when nothing is stale.
bool fitsBudget(uint64_t staleBytes, double bandwidth, double budgetSec)
{
	if (staleBytes == 0)
		return true;
	if (!(bandwidth > 0) || !(budgetSec > 0))
		return false;
	return static_cast<double>(staleBytes) / bandwidth <= budgetSec;
}

bool fitsBudget(const RoundStats &s, double budgetSec)
{
	return fitsBudget(s.staleBytes, s.bandwidthBytesPerSec, budgetSec);
}

// What a policy asks the caller to hold (see Decision).
struct PullHold {
	bool on = false;
	double hotSec = 0;
	double hotLastSec = 0; // when not on
};

// The bookkeeping every policy shares: nothing before the first pass, the deadline after it,
// and the latch that keeps a finalize decision final.
class PolicyBase : public FinalizePolicy {
public:
	explicit PolicyBase(const PolicyOptions &opts) : opts_(opts) {}

	Decision onSample(const RoundStats &s) final
	{
		last_ = s;
		observe(s);
		if (decided_.finalize)
			return decided_;
		Decision d;
		if (s.firstPassDone) {
			if (!firstPassAt_)
				firstPassAt_ = s.elapsedSec;
			roundsAfterFirstPass_++;

			// The policy sees the sample first so its state stays current even when
			// the deadline wins; its own reason is kept when both fire together.
			d = decide(s);
			if (!d.finalize && s.elapsedSec - *firstPassAt_ >= opts_.deadlineSec)
				d = { true, fmt::format("deadline: {:.1f}s since first pass",
							opts_.deadlineSec) };
		} else {
			d = decideBeforeFirstPass(s);
		}
		if (d.finalize) {
			decided_ = d;
		} else {
			PullHold h = hold(s);
			d.holdPull = h.on;
			d.holdHotSec = h.on ? h.hotSec : 0;
			d.hotLastSec = h.on ? 0 : h.hotLastSec;
		}
		holding_ = d.holdPull;
		holdingHot_ = d.holdHotSec > 0;
		return d;
	}

protected:
	// Every sample, before the first pass too (the cycle policy learns from those).
	virtual void observe(const RoundStats &) {}
	// Samples after the first pass, while no decision has been made.
	virtual Decision decide(const RoundStats &s) = 0;
	// Samples before it: only a policy whose caller post-copies may finalize then.
	virtual Decision decideBeforeFirstPass(const RoundStats &) { return {}; }
	// Every sample without a finalize decision: whether to ask for a pull hold.
	virtual PullHold hold(const RoundStats &) { return {}; }

	// "stale 1.5 MiB/23 chunks" plus the decision once made.
	std::string staleStatus() const
	{
		std::string out = fmt::format("stale {:.1f} MiB/{} chunks", mib(last_.staleBytes),
					      last_.staleChunks);
		if (!last_.firstPassDone)
			out += ", first pass running";
		if (decided_.finalize)
			out += ", finalize: " + decided_.reason;
		else if (holding_)
			out += holdingHot_ ? ", holding hot chunks" : ", holding pull";
		return out;
	}

	const PolicyOptions opts_;
	RoundStats last_;
	uint32_t roundsAfterFirstPass_ = 0;	// including the one being decided

private:
	std::optional<double> firstPassAt_;
	Decision decided_;
	bool holding_ = false;
	bool holdingHot_ = false;
};

class ImmediatePolicy final : public PolicyBase {
public:
	using PolicyBase::PolicyBase;
	std::string status() const override { return staleStatus(); }
	const char *name() const override { return "immediate"; }

private:
	Decision decide(const RoundStats &) override { return { true, "first pass done" }; }
};

// The threshold rule on its own, so that the cycle policy can fall back to exactly it.
class ThresholdRule {
public:
	explicit ThresholdRule(const PolicyOptions &opts) : opts_(opts) {}

	// Call for every sample after the first pass; roundsAfterFirstPass counts this one.
	Decision update(const RoundStats &s, uint32_t roundsAfterFirstPass)
	{
		bool byChunks = opts_.thresholdChunks > 0 && s.staleChunks < opts_.thresholdChunks;
		bool byBudget = opts_.downtimeBudgetSec > 0 && fitsBudget(s, opts_.downtimeBudgetSec);
		streak_ = byChunks || byBudget ? streak_ + 1 : 0;
		if (streak_ >= opts_.thresholdRounds)
			return { true, fmt::format("converged for {} rounds ({} stale chunks, {:.1f} MiB)",
						   streak_, s.staleChunks, mib(s.staleBytes)) };
		if (roundsAfterFirstPass >= opts_.maxRounds)
			return { true, fmt::format("round cap: {} rounds after first pass", opts_.maxRounds) };
		return {};
	}

	std::string status() const
	{
		return fmt::format("converged {}/{}", streak_, opts_.thresholdRounds);
	}

private:
	const PolicyOptions opts_;
	uint32_t streak_ = 0;
};

class ThresholdPolicy final : public PolicyBase {
public:
	explicit ThresholdPolicy(const PolicyOptions &opts) : PolicyBase(opts), rule_(opts) {}
	std::string status() const override
	{
		return fmt::format("{}, {}", staleStatus(), rule_.status());
	}
	const char *name() const override { return "threshold"; }

private:
	Decision decide(const RoundStats &s) override
	{
		return rule_.update(s, roundsAfterFirstPass_);
	}

	ThresholdRule rule_;
};

class LocalMinimumPolicy final : public PolicyBase {
public:
	using PolicyBase::PolicyBase;
	std::string status() const override
	{
		return fmt::format("{}, min {:.1f} MiB, {}/{} without improvement", staleStatus(),
				   min_ ? mib(static_cast<uint64_t>(*min_)) : 0.0, flat_,
				   opts_.patienceRounds);
	}
	const char *name() const override { return "local-minimum"; }

private:
	Decision decide(const RoundStats &s) override
	{
		const double v = static_cast<double>(s.staleBytes);
		if (s.staleBytes == 0)
			return { true, "nothing stale" };
		if (!min_) {
			min_ = ref_ = v;
			return {};
		}
		// Improvement is measured against the value at the last significant drop, so
		// a slow steady decline still counts as improving.
		if (v < ref_ * (1 - opts_.marginFraction)) {
			ref_ = v;
			flat_ = 0;
		} else {
			flat_++;
		}
		min_ = std::min(*min_, v);
		if (flat_ >= opts_.patienceRounds && v <= *min_ * (1 + opts_.marginFraction))
			return { true, fmt::format("local minimum: {:.1f} MiB stale (lowest {:.1f} MiB), "
						   "no improvement for {} rounds",
						   mib(s.staleBytes), mib(static_cast<uint64_t>(*min_)),
						   flat_) };
		return {};
	}

	std::optional<double> min_;	// lowest stale bytes since the first pass
	double ref_ = 0;		// stale bytes at the last significant improvement
	uint32_t flat_ = 0;		// samples since then
};

class CyclePolicy final : public PolicyBase {
public:
	explicit CyclePolicy(const PolicyOptions &opts)
		: PolicyBase(opts), analyser_(opts.sampleIntervalSec), fallback_(opts)
	{
	}
	std::string status() const override
	{
		std::string out = fmt::format("{}; {}", estimate_.verdict(), staleStatus());
		if (estimate_.periodic)
			return out;
		if (observedSec() < opts_.cycleWarmupSec)
			return out + fmt::format(", warm-up {:.1f}/{:.1f}s", observedSec(),
						 opts_.cycleWarmupSec);
		return out + ", " + fallback_.status();
	}
	const char *name() const override { return "cycle"; }
	bool holdAtStart() const override { return opts_.cycleHold != PolicyOptions::Hold::Off; }

private:
	double observedSec() const
	{
		return static_cast<double>(analyser_.size()) * opts_.sampleIntervalSec;
	}

	// The analyser needs evenly spaced samples, but the migration loop's samples drift
	// (100 ms sleeps plus the round's work: 100-120 ms apart on a loaded machine, which
	// blurs a period by as much). So each sample's bytes are spread evenly over the time
	// it covers and re-cut into bins of exactly sampleIntervalSec.
	void observe(const RoundStats &s) override
	{
		// The link's rate, not the current pull rate: a held pull measures nothing.
		peakRate_ = std::max(peakRate_, s.bandwidthBytesPerSec);
		updateEstimate(s);
		// Whether this low window began with the cold rest all in (within one sample's
		// pulling): only then is it the working set's window.
		const bool low = estimate_.periodic && estimate_.nextLowStartSec <= 0;
		if (low && !lowBefore_)
			coldDoneAtWindowStart_ = static_cast<double>(s.coldPendingBytes) <=
						 peakRate_ * opts_.sampleIntervalSec;
		lowBefore_ = low;
	}

	void updateEstimate(const RoundStats &s)
	{
		const double dt = opts_.sampleIntervalSec;
		const double t0 = lastElapsed_, t1 = std::max(s.elapsedSec, lastElapsed_);
		lastElapsed_ = t1;
		const double bytes = static_cast<double>(s.dirtyBytes);
		bool added = false;
		if (!(t1 > t0)) {
			binBytes_ += bytes;
		} else {
			const double rate = bytes / (t1 - t0);
			for (double t = t0; t < t1;) {
				const double binEnd = static_cast<double>(bin_ + 1) * dt;
				const double upTo = std::min(t1, binEnd);
				binBytes_ += rate * (upTo - t);
				t = upTo;
				// Sample times are sums of doubles: a hair short of a bin's end is
				// its end.
				if (t >= binEnd - 1e-6 * dt) {
					analyser_.addSample(binBytes_);
					binBytes_ = 0;
					bin_++;
					added = true;
					t = std::max(t, binEnd);
				}
			}
		}
		if (!added)
			return;
		estimate_ = analyser_.estimate();
		// The estimate's "now" is the end of the last whole bin; move it to t1.
		const double lag = std::max(0.0, t1 - static_cast<double>(bin_) * dt);
		if (estimate_.periodic && lag > 0) {
			estimate_.phaseSec = std::fmod(estimate_.phaseSec + lag, estimate_.periodSec);
			estimate_.nextLowStartSec = std::max(0.0, estimate_.nextLowStartSec - lag);
			estimate_.nextLowEndSec -= lag;
			if (estimate_.nextLowEndSec <= 0) {
				const double len = (1 - estimate_.dutyCycle) * estimate_.periodSec;
				estimate_.nextLowEndSec += estimate_.periodSec;
				estimate_.nextLowStartSec = estimate_.nextLowEndSec - len;
			}
		}
	}

	Decision decide(const RoundStats &s) override
	{
		// The fallback always sees every round so that switching to it (the verdict
		// turning aperiodic) behaves exactly as if it had run all along.
		Decision threshold = fallback_.update(s, roundsAfterFirstPass_);
		const std::optional<uint64_t> prevStale = std::exchange(prevStale_, s.staleBytes);
		if (!estimate_.periodic) {
			inWindow_ = false;
			return observedSec() >= opts_.cycleWarmupSec ? threshold : Decision{};
		}

		const auto [inWindow, wasInWindow, closing] = trackWindow(s);
		if (!inWindow)
			return {};
		const bool fits = fitsBudget(s.staleBytes, peakRate_, opts_.downtimeBudgetSec);
		// After a switch-over with post-copy, what is still stale is sent once; past this
		// window the next high phase would dirty it again first.
		if (!fits && !(opts_.postCopyFollows && closing && wasInWindow))
			return {};
		// Fitting the budget is not enough at the start of a window: what the high
		// phase left stale is still draining, and every chunk pulled now is one fault
		// less after the switch-over. So the first sample of a window only starts a
		// trend, and later ones wait while stale bytes keep falling and are above what
		// the low phase itself keeps dirtying (two samples' worth) -- unless the window
		// would be too short to finalize in by the next sample but one.
		const bool atFloor = s.staleBytes <= 2 * s.dirtyBytes;
		// No trend yet (the first pass ended with this sample): still draining.
		const bool falling = !prevStale ||
				     double(s.staleBytes) < double(*prevStale) * (1 - opts_.marginFraction);
		if (!closing && (!wasInWindow || (falling && !atFloor)))
			return {};
		return { true, fmt::format("low window ({:.2f}s left), {:.1f} MiB stale {} {:.2f}s; {}",
					   estimate_.nextLowEndSec, mib(s.staleBytes),
					   fits ? "fits" : "left to post-copy, window closing, over",
					   opts_.downtimeBudgetSec, estimate_.verdict()) };
	}

	// Finalize early in a low window: the switch-over (about the downtime budget) should end
	// before activity resumes, so enough of the window must be left; a window shorter than
	// the budget is used if at least half of it is left. With post-copy following, the
	// switch-over moves device state only (tens of ms), so 0.1 s (at most a quarter of the
	// window) is left and the rest of the window still pulls. Before Finalize the leecher
	// lets the requests in flight arrive, so their transfer time (at the peak pull rate, at
	// most half the window) is needed as well. "closing": the last sample but one that
	// still leaves that much.
	struct WindowState {
		bool in = false, was = false, closing = false;
	};
	WindowState trackWindow(const RoundStats &s)
	{
		const double lowLen = (1 - estimate_.dutyCycle) * estimate_.periodSec;
		const double drainSec = peakRate_ > 0 ? std::min(double(s.inFlightBytes) / peakRate_, lowLen / 2) : 0;
		const double needLeft = drainSec + (opts_.postCopyFollows ? std::min(0.1, lowLen / 4)
									  : std::min(opts_.downtimeBudgetSec, lowLen / 2));
		WindowState w;
		w.in = estimate_.nextLowStartSec <= 0 && estimate_.nextLowEndSec >= needLeft;
		w.was = std::exchange(inWindow_, w.in);
		w.closing = estimate_.nextLowEndSec < needLeft + 2 * opts_.sampleIntervalSec;
		return w;
	}

	Decision decideBeforeFirstPass(const RoundStats &s) override
	{
		if (!opts_.postCopyFollows || !estimate_.periodic) {
			inWindow_ = false;
			return {};
		}
		const WindowState w = trackWindow(s);
		// Only a window that began with the cold rest all in: then it went to the working
		// set alone, and what is left is the part of it no window could hold. Otherwise
		// the cold rest is pulled on through the next high phase, leaving the next window
		// to the working set.
		if (!w.in || !w.was || !w.closing || !coldDoneAtWindowStart_)
			return {};
		return { true, fmt::format("low window ({:.2f}s left) closing before the first pass ended: "
					   "{:.1f} MiB left to post-copy; {}",
					   estimate_.nextLowEndSec, mib(s.staleBytes), estimate_.verdict()) };
	}

	PullHold hold(const RoundStats &s) override
	{
		using Hold = PolicyOptions::Hold;
		if (opts_.cycleHold == Hold::Off || holdDropped_ || s.elapsedSec >= opts_.deadlineSec)
			return {};
		const bool hot = opts_.cycleHold == Hold::Hot;
		if (estimate_.periodic) {
			everPeriodic_ = true;
			// What the last periods wrote, the high phase will likely write again. Two
			// periods, not one: a high phase need not touch every chunk of its working
			// set, and a chunk it skipped once would cool down just as the next high
			// phase starts, be pulled, and be written again.
			const double hotSec = 2 * estimate_.periodSec;
			if (estimate_.nextLowStartSec > 0)
				return { true, hot ? hotSec : 0, 0 };
			// A low window that began with cold chunks left finishes those and keeps the
			// hot ones for the next: pulled now, they would be rewritten before this
			// window could end the first pass. One that began with only hot chunks
			// left pulls them (never-pulled first).
			if (hot && !coldDoneAtWindowStart_)
				return { true, hotSec, 0 };
			return { false, 0, hotSec };
		}
		// Warming up, nothing is known about which chunks are hot: a working set written
		// before the migration began looks cold until its next high phase. So hold every
		// chunk: the warm-up is a monitoring phase, and once the cycle is known the cold
		// rest is pulled at any time and the hot set inside a low window.
		if (observedSec() < opts_.cycleWarmupSec)
			return { true, 0 };
		// Aperiodic after the warm-up: no window is worth waiting for. A workload never
		// seen periodic is taken as aperiodic for good (a spurious periodic verdict on
		// noise must not pause the pull again); one seen periodic before only flickered,
		// and holding resumes with the verdict (the deadline bounds how long).
		if (!everPeriodic_)
			holdDropped_ = true;
		return {};
	}

	CycleAnalyser analyser_;
	CycleEstimate estimate_;
	ThresholdRule fallback_;
	double lastElapsed_ = 0;		// end of the time the samples so far cover
	uint64_t bin_ = 0;			// bins handed to the analyser
	double binBytes_ = 0;			// bytes in the bin being filled
	std::optional<uint64_t> prevStale_;	// stale bytes at the previous decision
	double peakRate_ = 0;			// highest pull rate measured, bytes/s
	bool coldDoneAtWindowStart_ = false;	// this low window began with only hot chunks left
	bool lowBefore_ = false;		// the previous sample was in a low window
	bool inWindow_ = false;			// the previous decision was inside a low window
	bool everPeriodic_ = false;		// the analyser has called the workload periodic
	bool holdDropped_ = false;		// aperiodic after the warm-up, never periodic
};

template<typename T>
Result<T> parseNumber(std::string_view key, std::string_view text)
{
	T v{};
	auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
	if (ec != std::errc() || end != text.data() + text.size())
		return Error::format(EINVAL, "{}: '{}' is not a number", key, text);
	return v;
}

// The numeric options of a policy spec ("cycle:warmup=6,deadline=30"), each parsed as the type
// of the PolicyOptions field it sets.
using NumberField = std::variant<double PolicyOptions::*, uint64_t PolicyOptions::*, uint32_t PolicyOptions::*>;
struct NumberOption {
	std::string_view key;
	NumberField field;
};
constexpr NumberOption kNumberOptions[] = {
	{ "deadline", &PolicyOptions::deadlineSec },
	{ "interval", &PolicyOptions::sampleIntervalSec },
	{ "budget", &PolicyOptions::downtimeBudgetSec },
	{ "chunks", &PolicyOptions::thresholdChunks },
	{ "rounds", &PolicyOptions::thresholdRounds },
	{ "max-rounds", &PolicyOptions::maxRounds },
	{ "patience", &PolicyOptions::patienceRounds },
	{ "margin", &PolicyOptions::marginFraction },
	{ "warmup", &PolicyOptions::cycleWarmupSec },
};

Status applyOption(PolicyOptions *o, std::string_view key, std::string_view value)
{
	for (const NumberOption &n : kNumberOptions) {
		if (n.key != key)
			continue;
		return std::visit(
			[&](auto field) -> Status {
				using T = std::remove_reference_t<decltype(o->*field)>;
				FERRY_ASSIGN(o->*field, parseNumber<T>(key, value));
				return {};
			},
			n.field);
	}
	if (key != "hold")
		return Error::format(EINVAL, "unknown option '{}' (known: deadline, interval, budget, "
				     "chunks, rounds, max-rounds, patience, margin, warmup, hold)", key);
	if (value == "off")
		o->cycleHold = PolicyOptions::Hold::Off;
	else if (value == "hot")
		o->cycleHold = PolicyOptions::Hold::Hot;
	else if (value == "all")
		o->cycleHold = PolicyOptions::Hold::All;
	else
		return Error::format(EINVAL, "hold: '{}' is not off, hot or all", value);
	return {};
}

Status validate(const PolicyOptions &o)
{
	auto bad = [](std::string_view what, double v) {
		return Error::format(EINVAL, "{} {} out of range", what, v);
	};
	if (!(o.deadlineSec > 0) || !std::isfinite(o.deadlineSec))
		return bad("deadline", o.deadlineSec);
	if (!(o.sampleIntervalSec > 0) || !std::isfinite(o.sampleIntervalSec))
		return bad("interval", o.sampleIntervalSec);
	if (!(o.downtimeBudgetSec >= 0) || !std::isfinite(o.downtimeBudgetSec))
		return bad("budget", o.downtimeBudgetSec);
	if (!(o.cycleWarmupSec >= 0) || !std::isfinite(o.cycleWarmupSec))
		return bad("warmup", o.cycleWarmupSec);
	if (!(o.marginFraction >= 0 && o.marginFraction < 1))
		return bad("margin", o.marginFraction);
	if (o.thresholdRounds == 0)
		return bad("rounds", 0);
	if (o.maxRounds == 0)
		return bad("max-rounds", 0);
	if (o.patienceRounds == 0)
		return bad("patience", 0);
	return {};
}

} // namespace

std::vector<std::string> finalizePolicyNames()
{
	return { std::begin(kPolicyNames), std::end(kPolicyNames) };
}

Result<std::unique_ptr<FinalizePolicy>> makeFinalizePolicy(std::string_view spec,
							   const PolicyOptions &opts)
{
	auto ctx = [&](const Error &e) { return e.context(fmt::format("finalize policy '{}'", spec)); };

	std::string_view name = spec;
	PolicyOptions o = opts;
	if (size_t colon = spec.find(':'); colon != std::string_view::npos) {
		name = spec.substr(0, colon);
		std::string_view rest = spec.substr(colon + 1);
		// Every comma-separated item must be key=value: "name:" or a trailing comma is a
		// typo worth reporting, not something to ignore.
		for (;;) {
			size_t comma = rest.find(',');
			std::string_view item = rest.substr(0, comma);
			size_t eq = item.find('=');
			if (eq == std::string_view::npos || eq == 0)
				return ctx(Error::format(EINVAL, "expected key=value, got '{}'", item));
			Status st = applyOption(&o, item.substr(0, eq), item.substr(eq + 1));
			if (!st)
				return ctx(st.error());
			if (comma == std::string_view::npos)
				break;
			rest = rest.substr(comma + 1);
		}
	}
	if (Status st = validate(o); !st)
		return ctx(st.error());

	std::unique_ptr<FinalizePolicy> p;
	if (name == "immediate")
		p = std::make_unique<ImmediatePolicy>(o);
	else if (name == "threshold")
		p = std::make_unique<ThresholdPolicy>(o);
	else if (name == "local-minimum")
		p = std::make_unique<LocalMinimumPolicy>(o);
	else if (name == "cycle")
		p = std::make_unique<CyclePolicy>(o);
	else
		return ctx(Error::format(EINVAL, "unknown policy '{}' (known: {})", name,
					 fmt::join(finalizePolicyNames(), ", ")));
	return p;
}

} // namespace ferry
