// SPDX-License-Identifier: GPL-2.0-or-later
// Workload-cycle analyser: finds a period in a VM's activity series (e.g. bytes dirtied per
// sampling interval) and predicts the next low-activity window, so that finalize can be
// postponed to a favourable moment (Baruchi, Midorikawa and Sato, IEEE Latin America
// Transactions 13(4), 2015; ALMA, arXiv:1607.07846).
//
// Method: the periodogram (FFTW r2c of the detrended, Hann-windowed series) proposes candidate
// periods; the autocorrelation at each candidate lag confirms or rejects it (a periodic series
// correlates with itself one period later and anti-correlates somewhere in between; noise
// does not). The peak must also be significant: the difference between the series and itself
// one period earlier must look like noise, not like a slow wander (a random walk can show two
// or three convincing "oscillations"). The period is refined from the autocorrelation peaks
// at its multiples. The recent series is then folded at the period into a profile indexed by
// "time from now modulo the period"; the low window is the longest contiguous run of the
// profile below the level halfway between its minimum and maximum.
//
// Threading: an analyser is used by one thread at a time (estimate() included). Several
// analysers may run in parallel threads (FFTW planning is serialised internally).
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>

namespace ferry {

namespace cycles {
struct FftWorkspace;
} // namespace cycles

struct CycleEstimate {
	bool periodic = false;		// false = "aperiodic" verdict
	double periodSec = 0;		// detected period
	double confidence = 0;		// autocorrelation at the detected lag, 0..1
	double dutyCycle = 0;		// fraction of the period that is high-activity
	// Where "now" (the end of the last sample) sits within the cycle, 0..period, counted from
	// the start of the high-activity part of the cycle (the end of the low window).
	double phaseSec = 0;
	double nextLowStartSec = 0;	// seconds from now until the next low window starts (0 = in one now)
	double nextLowEndSec = 0;	// seconds from now until it ends
	size_t samples = 0;		// samples the estimate was made from

	// One line: "periodic T=4.02s duty=0.50 conf=0.91 low in 1.30s (0.70s long)",
	// "periodic T=4.02s duty=0.50 conf=0.91 low now (1.20s left)" or "aperiodic (n=37)".
	std::string verdict() const;
};

class CycleAnalyser {
public:
	// sampleIntervalSec > 0 is the spacing of addSample() calls; the analyser keeps the most
	// recent maxSamples samples (at least 16).
	explicit CycleAnalyser(double sampleIntervalSec, size_t maxSamples = 4096);
	~CycleAnalyser();
	CycleAnalyser(CycleAnalyser &&) noexcept;
	CycleAnalyser &operator=(CycleAnalyser &&) noexcept;

	// Appends one sample (e.g. bytes dirtied in the last interval). Non-finite or negative
	// values are recorded as 0 so a bogus sample cannot poison the spectrum.
	void addSample(double value);

	// Analyses the samples held now. Calls a series periodic only when it spans at least
	// kMinPeriods periods and the autocorrelation confirms the period. Cost: three FFTs of
	// 4x the sample count rounded up to a power of two, plus O(n) passes; measured here
	// ~0.08 ms for 100 samples, ~0.7 ms for 4096. Const, but it reuses an internal FFT
	// workspace: never call it on one analyser from two threads at once.
	CycleEstimate estimate() const;

	size_t size() const { return samples_.size(); }
	double sampleIntervalSec() const { return interval_; }
	void clear() { samples_.clear(); }

	// A period must repeat this often in the data before it is believed.
	static constexpr double kMinPeriods = 2.5;
	// Shortest period reported, in samples: the low window needs a few samples to be located.
	static constexpr size_t kMinLagSamples = 4;
	// Autocorrelation at the period lag needed to call a series periodic.
	static constexpr double kMinConfidence = 0.4;

private:
	double interval_;
	size_t maxSamples_;
	std::deque<double> samples_;
	// FFTW buffers and plans for the current transform size, reused across estimate() calls
	// because planning costs several times more than the transforms themselves.
	mutable std::unique_ptr<cycles::FftWorkspace> fft_;
};

} // namespace ferry
