// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/cycles/analyser.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numbers>
#include <vector>

#include <fmt/format.h>

#include "cycles/fftw.h"

namespace ferry {

namespace cycles {

std::mutex &fftwPlannerLock()
{
	static std::mutex lock;
	return lock;
}

} // namespace cycles

namespace {

using cycles::FftWorkspace;

// Fewer samples than this cannot show kMinPeriods periods of kMinLagSamples each.
constexpr size_t kMinSamples = 32;
// How far the autocorrelation must climb back from its lowest point before the candidate lag.
// A periodic series anti-correlates in between (a square wave of duty d dips to
// -min(d, 1-d)/max(d, 1-d) of its peak); white noise stays near 0 and a random walk mostly
// decays without recovering.
constexpr double kMinProminence = 0.5;
// Candidates among sub-multiples: the shortest lag whose autocorrelation is this close to the
// best one wins, so that 2T is not reported when T repeats as well.
constexpr double kShortestLagSlack = 0.85;
// A fraction of the picked lag is the period if its autocorrelation is at least this share
// of the picked one's (the estimate at the longer lag rests on less overlap and is noisier).
constexpr double kSubMultipleSlack = 0.7;
// The spectral peaks tried as candidate periods.
constexpr size_t kMaxCandidates = 6;
// Significance of the autocorrelation at the candidate lag, in standard errors. The standard
// error is 1/sqrt(effective overlap); see repeatFit() for "effective".
constexpr double kMinZScore = 3.75;
// A lag that predicts this much of the variance needs no significance test. (A clean smooth
// cycle compared at a lag a fraction of a sample off leaves a small but smooth difference,
// which the test would mistake for a wander.)
constexpr double kExplainedEnough = 0.9;
// The folded profile never has more bins than this (longer periods get wider bins).
constexpr size_t kMaxBins = 64;
// Only this many recent periods are folded: a small error in the period smears the profile
// in proportion to how many periods are stacked.
constexpr double kFoldPeriods = 8;

size_t nextPow2(size_t n)
{
	size_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

// Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, a), (0, b), (1, c); used to
// place a peak between samples. 0 when the three points are collinear.
double parabolicOffset(double a, double b, double c)
{
	double den = a - 2 * b + c;
	if (den == 0 || !std::isfinite(den))
		return 0;
	return std::clamp(0.5 * (a - c) / den, -0.5, 0.5);
}

// Subtracts the least-squares line. A slow drift (or a random walk) otherwise dominates the
// low end of the spectrum and keeps the autocorrelation high at every lag.
void detrend(std::vector<double> &x)
{
	const double n = static_cast<double>(x.size());
	const double tMean = (n - 1) / 2;
	double xMean = 0;
	for (double v : x)
		xMean += v;
	xMean /= n;
	double sxy = 0, sxx = 0;
	for (size_t i = 0; i < x.size(); i++) {
		double dt = static_cast<double>(i) - tMean;
		sxy += dt * (x[i] - xMean);
		sxx += dt * dt;
	}
	const double slope = sxx > 0 ? sxy / sxx : 0;
	for (size_t i = 0; i < x.size(); i++)
		x[i] -= xMean + slope * (static_cast<double>(i) - tMean);
}

struct Candidate {
	size_t lag = 0;		// in samples
	double r = 0;		// normalised autocorrelation at lag
};

// Normalised, unbiased autocorrelation r[0..n-1] of x (already mean-free), computed as the
// inverse transform of |X|^2 with zero padding to ws.m >= 2n so that the circular correlation
// equals the linear one. Also returns the periodogram of the Hann-windowed series in *power
// (bins 0..m/2).
void spectra(const std::vector<double> &x, FftWorkspace &ws, std::vector<double> *power,
	     std::vector<double> *r)
{
	const size_t n = x.size();
	const size_t m = ws.m;
	double *buf = ws.real.get();
	fftw_complex *spec = ws.spectrum.get();

	// Periodogram: the Hann window keeps the leakage of a non-integer number of periods
	// from burying the fundamental.
	std::fill(buf, buf + m, 0.0);
	for (size_t i = 0; i < n; i++) {
		double w = 0.5 - 0.5 * std::cos(2 * std::numbers::pi * static_cast<double>(i) /
						 static_cast<double>(n - 1));
		buf[i] = x[i] * w;
	}
	ws.forward.execute();
	power->resize(m / 2 + 1);
	for (size_t k = 0; k <= m / 2; k++)
		(*power)[k] = spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1];

	// Autocorrelation (Wiener-Khinchin), unwindowed.
	std::fill(buf, buf + m, 0.0);
	std::copy(x.begin(), x.end(), buf);
	ws.forward.execute();
	for (size_t k = 0; k <= m / 2; k++) {
		spec[k][0] = spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1];
		spec[k][1] = 0;
	}
	ws.inverse.execute();
	const double r0 = buf[0] / static_cast<double>(n);
	r->resize(n);
	for (size_t t = 0; t < n; t++)
		(*r)[t] = r0 > 0 ? buf[t] / static_cast<double>(n - t) / r0 : 0;
}

// The highest local maximum of r in [lo, hi] (both clamped to 1..r.size()-2), or lag 0.
Candidate acfPeak(const std::vector<double> &r, size_t lo, size_t hi)
{
	Candidate best;
	lo = std::max<size_t>(lo, 1);
	hi = std::min(hi, r.size() - 2);
	for (size_t t = lo; t <= hi; t++) {
		if (r[t] >= r[t - 1] && r[t] >= r[t + 1] && (best.lag == 0 || r[t] > best.r))
			best = { t, r[t] };
	}
	return best;
}

struct RepeatFit {
	// 1 - var(x[i] - x[i-lag]) / (2 var(x)): how well one period predicts the next
	double explained = 0;
	double residualRho = 0;	// lag-1 autocorrelation of x[i] - x[i-lag], clamped to [0, 1]
};

// Compares the series with itself one period earlier. If it really repeats, the difference is
// measurement noise, nearly uncorrelated from one sample to the next. A random walk that happens
// to show two or three convincing "oscillations" leaves a difference that is a moving sum of
// its steps, correlated almost 1 from sample to sample; by Bartlett's rule such a series holds
// only about n(1-rho)/(1+rho) independent samples, too few for its autocorrelation peak to be
// significant. This is what tells a short real cycle from a slow drift, which autocorrelation
// and spectrum alone cannot. (An integer lag off the true period by a fraction of a sample only
// leaves one-sample spikes at the edges, which hardly correlate.)
RepeatFit repeatFit(const std::vector<double> &x, size_t lag)
{
	RepeatFit f;
	double total = 0, diff = 0, lag1 = 0, prev = 0;
	for (double v : x)
		total += v * v;
	for (size_t i = lag; i < x.size(); i++) {
		double d = x[i] - x[i - lag];
		diff += d * d;
		if (i > lag)
			lag1 += d * prev;
		prev = d;
	}
	const double overlap = static_cast<double>(x.size() - lag);
	if (total <= 0 || overlap <= 1)
		return f;
	f.explained = 1 - (diff / overlap) / (2 * total / static_cast<double>(x.size()));
	f.residualRho = diff > 0 ? std::clamp(lag1 / diff, 0.0, 1.0) : 0;
	return f;
}

// Is the autocorrelation r at lag significant given what repeating leaves?
bool significant(const std::vector<double> &x, size_t lag, double r)
{
	RepeatFit f = repeatFit(x, lag);
	if (f.explained >= kExplainedEnough)
		return true;
	const double overlap = static_cast<double>(x.size() - lag);
	const double nEff = overlap * (1 - f.residualRho) / (1 + f.residualRho);
	return nEff > 0 && r * std::sqrt(nEff) >= kMinZScore;
}

} // namespace

std::string CycleEstimate::verdict() const
{
	if (!periodic)
		return fmt::format("aperiodic (n={})", samples);
	std::string low = nextLowStartSec <= 0
		? fmt::format("low now ({:.2f}s left)", nextLowEndSec)
		: fmt::format("low in {:.2f}s ({:.2f}s long)", nextLowStartSec,
			      nextLowEndSec - nextLowStartSec);
	return fmt::format("periodic T={:.2f}s duty={:.2f} conf={:.2f} {}", periodSec, dutyCycle,
			   confidence, low);
}

CycleAnalyser::CycleAnalyser(double sampleIntervalSec, size_t maxSamples)
	: interval_(sampleIntervalSec), maxSamples_(std::max(maxSamples, kMinSamples))
{
	assert(std::isfinite(sampleIntervalSec) && sampleIntervalSec > 0);
}

CycleAnalyser::~CycleAnalyser() = default;
CycleAnalyser::CycleAnalyser(CycleAnalyser &&) noexcept = default;
CycleAnalyser &CycleAnalyser::operator=(CycleAnalyser &&) noexcept = default;

void CycleAnalyser::addSample(double value)
{
	if (!std::isfinite(value) || value < 0)
		value = 0;
	samples_.push_back(value);
	while (samples_.size() > maxSamples_)
		samples_.pop_front();
}

CycleEstimate CycleAnalyser::estimate() const
{
	CycleEstimate e;
	const size_t n = samples_.size();
	e.samples = n;
	if (n < kMinSamples)
		return e;

	std::vector<double> x(samples_.begin(), samples_.end());
	double scale = 0;
	for (double v : x)
		scale = std::max(scale, std::fabs(v));
	detrend(x);
	double energy = 0;
	for (double v : x)
		energy += v * v;
	// A constant (or a straight line) carries no cycle; the relative test keeps rounding
	// noise of large byte counts from looking like a signal.
	if (!(energy > 1e-20 * scale * scale * static_cast<double>(n)) || energy == 0)
		return e;

	const size_t maxLag = static_cast<size_t>(static_cast<double>(n) / kMinPeriods);
	if (maxLag < kMinLagSamples)
		return e;
	const size_t m = nextPow2(4 * n);
	if (!fft_ || fft_->m != m)
		fft_ = FftWorkspace::make(m);
	if (!fft_)
		return e;	// FFTW could not allocate: no verdict is the safe answer
	std::vector<double> power, r;
	spectra(x, *fft_, &power, &r);

	// Candidate periods: the strongest local maxima of the periodogram between the longest
	// and the shortest lag we accept. With 4x zero padding the bins are fine enough that the
	// autocorrelation search below only has to correct the leakage bias.
	const size_t kLo = std::max<size_t>(2, m / maxLag);
	const size_t kHi = std::min(m / 2 - 1, m / kMinLagSamples);
	std::vector<size_t> peaks;
	for (size_t k = kLo; k <= kHi; k++)
		if (power[k] > power[k - 1] && power[k] >= power[k + 1])
			peaks.push_back(k);
	std::sort(peaks.begin(), peaks.end(),
		  [&](size_t a, size_t b) { return power[a] > power[b]; });
	if (peaks.size() > kMaxCandidates)
		peaks.resize(kMaxCandidates);

	std::vector<Candidate> accepted;
	for (size_t k : peaks) {
		double kf = static_cast<double>(k) +
			    parabolicOffset(power[k - 1], power[k], power[k + 1]);
		double lag0 = static_cast<double>(m) / kf;
		size_t lo = std::max(kMinLagSamples, static_cast<size_t>(std::floor(0.75 * lag0)));
		size_t hi = std::min(maxLag, static_cast<size_t>(std::ceil(1.33 * lag0)));
		if (lo > hi)
			continue;
		Candidate c = acfPeak(r, lo, hi);
		if (c.lag == 0 || c.r < kMinConfidence)
			continue;
		double trough = *std::min_element(r.begin() + 1, r.begin() + c.lag);
		if (c.r - trough < kMinProminence)
			continue;
		if (!significant(x, c.lag, c.r))
			continue;
		accepted.push_back(c);
	}
	if (accepted.empty())
		return e;
	double bestR = 0;
	for (const Candidate &c : accepted)
		bestR = std::max(bestR, c.r);
	Candidate pick{ n, 0 };
	for (const Candidate &c : accepted)
		if (c.r >= kShortestLagSlack * bestR && c.lag < pick.lag)
			pick = c;
	// A confirmed lag may still be a multiple of the true period (the spectrum's fundamental
	// can be weaker than a harmonic, and the significance test is stricter for short lags).
	// If the series correlates about as well at a fraction of it, that fraction is the period.
	for (size_t div = 3; div >= 2; div--) {
		const double sub = static_cast<double>(pick.lag) / static_cast<double>(div);
		size_t lo = std::max(kMinLagSamples, static_cast<size_t>(std::floor(0.85 * sub)));
		size_t hi = static_cast<size_t>(std::ceil(1.15 * sub));
		if (lo > hi)
			continue;
		Candidate c = acfPeak(r, lo, hi);
		if (c.lag == 0 || c.r < kSubMultipleSlack * pick.r)
			continue;
		if (c.r - *std::min_element(r.begin() + 1, r.begin() + c.lag) < kMinProminence)
			continue;
		pick = c;
		break;
	}

	// Refine the period from the autocorrelation peaks at its multiples: the error of a peak
	// position does not grow with the multiple, so dividing by it shrinks the error. Stop at
	// the first multiple that no longer shows a clear peak or lacks 1.5 periods of overlap.
	double lagF = static_cast<double>(pick.lag) +
		      parabolicOffset(r[pick.lag - 1], r[pick.lag], r[pick.lag + 1]);
	const double lag1 = lagF;
	for (size_t mult = 2;; mult++) {
		double centre = lag1 * static_cast<double>(mult);
		if (centre + 1.5 * lag1 > static_cast<double>(n))
			break;
		size_t lo = static_cast<size_t>(std::floor(centre - lag1 / 4));
		size_t hi = static_cast<size_t>(std::ceil(centre + lag1 / 4));
		Candidate c = acfPeak(r, lo, hi);
		if (c.lag == 0 || c.r < 0.5 * pick.r)
			break;
		double peak = static_cast<double>(c.lag) +
			      parabolicOffset(r[c.lag - 1], r[c.lag], r[c.lag + 1]);
		lagF = peak / static_cast<double>(mult);
	}

	// Fold the recent samples at the period. A sample measures activity over the interval
	// ending at its time, so it is placed at the interval's midpoint; positions are "time
	// from now modulo the period", so the profile reads directly as a forecast.
	const double dt = interval_;
	const double period = lagF * dt;
	const size_t bins =
		std::clamp(static_cast<size_t>(std::floor(lagF)), kMinLagSamples, kMaxBins);
	const double width = period / static_cast<double>(bins);
	const size_t folded = std::min(n, static_cast<size_t>(std::ceil(kFoldPeriods * lagF)));
	std::vector<double> sum(bins, 0.0);
	std::vector<size_t> count(bins, 0);
	for (size_t i = n - folded; i < n; i++) {
		double offset = (static_cast<double>(i) - static_cast<double>(n - 1)) * dt - dt / 2;
		double u = std::fmod(offset, period);
		if (u < 0)
			u += period;
		size_t b = std::min(bins - 1, static_cast<size_t>(u / width));
		sum[b] += samples_[i];
		count[b]++;
	}
	// Bins are at least one sample wide and at least two periods are folded, so every bin is
	// normally hit; should one not be, it borrows its nearest filled neighbour.
	std::vector<double> profile(bins, 0.0);
	for (size_t b = 0; b < bins; b++)
		if (count[b])
			profile[b] = sum[b] / static_cast<double>(count[b]);
	for (size_t b = 0; b < bins; b++) {
		if (count[b])
			continue;
		for (size_t d = 1; d < bins; d++) {
			if (count[(b + d) % bins]) {
				profile[b] = profile[(b + d) % bins];
				break;
			}
			if (count[(b + bins - d) % bins]) {
				profile[b] = profile[(b + bins - d) % bins];
				break;
			}
		}
	}
	if (bins >= 12) {
		// Light circular [1 2 1] smoothing: noise in a single bin must not split the low
		// window; being symmetric it does not move the edges.
		std::vector<double> s(bins);
		for (size_t b = 0; b < bins; b++)
			s[b] = (profile[(b + bins - 1) % bins] + 2 * profile[b] +
				profile[(b + 1) % bins]) / 4;
		profile.swap(s);
	}
	auto [mnIt, mxIt] = std::minmax_element(profile.begin(), profile.end());
	const double level = (*mnIt + *mxIt) / 2;
	if (!(*mxIt > *mnIt))
		return e;

	// The longest circular run of low bins. Start scanning just after a high bin so a run
	// that wraps around the end is seen whole.
	const size_t highBin = static_cast<size_t>(mxIt - profile.begin());
	size_t bestStart = 0, bestLen = 0, runStart = 0, runLen = 0, lowBins = 0;
	for (size_t j = 1; j <= bins; j++) {
		size_t b = (highBin + j) % bins;
		if (profile[b] < level) {
			lowBins++;
			if (runLen++ == 0)
				runStart = b;
			if (runLen > bestLen) {
				bestLen = runLen;
				bestStart = runStart;
			}
		} else {
			runLen = 0;
		}
	}
	assert(bestLen > 0 && bestLen < bins);

	e.periodic = true;
	e.periodSec = period;
	e.confidence = std::clamp(pick.r, 0.0, 1.0);
	e.dutyCycle = static_cast<double>(bins - lowBins) / static_cast<double>(bins);
	const size_t endBin = bestStart + bestLen;	// one past the run, may exceed bins
	if (bestStart == 0 || endBin > bins) {
		// The run covers bin 0, the interval starting now.
		e.nextLowStartSec = 0;
		e.nextLowEndSec = static_cast<double>(bestStart == 0 ? bestLen : endBin - bins) * width;
	} else {
		e.nextLowStartSec = static_cast<double>(bestStart) * width;
		e.nextLowEndSec = static_cast<double>(endBin) * width;
	}
	// The cycle starts where activity rises, i.e. where the low window ends.
	const double highStart = std::fmod(static_cast<double>(endBin) * width, period);
	e.phaseSec = highStart > 0 ? period - highStart : 0;
	return e;
}

} // namespace ferry
