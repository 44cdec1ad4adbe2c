// SPDX-License-Identifier: GPL-2.0-or-later
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "ferry/cycles/analyser.h"
#include "support/synthetic_series.h"

using namespace ferry;
using ferry::test::Shape;
using ferry::test::Wave;

namespace {

constexpr double kDt = 0.1;

CycleEstimate analyse(const std::vector<double> &series, double dt = kDt)
{
	CycleAnalyser a(dt, 4096);
	for (double v : series)
		a.addSample(v);
	return a.estimate();
}

// Fraction of the predicted low window [now + start, now + end] that is truly low.
double lowFraction(const Wave &w, double now, const CycleEstimate &e)
{
	const int steps = 200;
	int low = 0;
	for (int i = 0; i < steps; i++) {
		double t = now + e.nextLowStartSec +
			   (e.nextLowEndSec - e.nextLowStartSec) * (i + 0.5) / steps;
		low += w.isLow(t);
	}
	return static_cast<double>(low) / steps;
}

// Circular distance between two positions in a cycle of length period.
double cyclicDistance(double a, double b, double period)
{
	double d = std::fmod(std::fabs(a - b), period);
	return std::min(d, period - d);
}

std::string describe(const Wave &w, size_t n, const CycleEstimate &e)
{
	return fmt::format("T={} duty={} phase={} noise={} n={} -> {}", w.periodSec, w.duty,
			   w.phaseSec, w.noise, n, e.verdict());
}

// Checks period, low-window prediction and (for square waves) duty and phase.
void expectFound(const Wave &w, size_t n, unsigned seed)
{
	CycleEstimate e = analyse(test::sampleWave(w, kDt, n, seed));
	const double now = static_cast<double>(n) * kDt;
	SCOPED_TRACE(describe(w, n, e));
	ASSERT_TRUE(e.periodic);
	EXPECT_NEAR(e.periodSec, w.periodSec, 0.1 * w.periodSec);
	EXPECT_GT(e.confidence, CycleAnalyser::kMinConfidence);
	EXPECT_LE(e.confidence, 1.0);

	ASSERT_GE(e.nextLowStartSec, 0.0);
	ASSERT_GT(e.nextLowEndSec, e.nextLowStartSec);
	EXPECT_LT(e.nextLowStartSec, e.periodSec);
	EXPECT_GE(lowFraction(w, now, e), 0.7);

	if (w.shape == Shape::Square) {
		EXPECT_NEAR(e.dutyCycle, w.duty, 0.12);
		const double truePhase = w.cyclePos(now) * w.periodSec;
		EXPECT_LE(cyclicDistance(e.phaseSec, truePhase, w.periodSec),
			  0.1 * w.periodSec + 2 * kDt);
	}
}

} // namespace

TEST(CycleAnalyser, FindsPeriodOfNoisySquareWaves)
{
	unsigned seed = 1;
	for (double period : { 1.0, 1.7, 2.5, 4.0, 6.3, 10.0 }) {
		for (double duty : { 0.2, 0.5, 0.8 }) {
			for (double noise : { 0.0, 0.15, 0.3 }) {
				Wave w{ .periodSec = period, .duty = duty, .noise = noise };
				w.phaseSec = std::fmod(0.37 * period * seed, period);
				size_t n = static_cast<size_t>(std::ceil(5 * period / kDt));
				expectFound(w, n, seed++);
			}
		}
	}
}

TEST(CycleAnalyser, FindsPeriodOfSmoothWaves)
{
	unsigned seed = 100;
	for (Shape shape : { Shape::Pulse, Shape::Sine }) {
		for (double period : { 1.0, 3.3, 10.0 }) {
			for (double duty : { 0.3, 0.6 }) {
				Wave w{ .shape = shape, .periodSec = period, .duty = duty,
					.phaseSec = 0.29 * period, .noise = 0.2 };
				size_t n = static_cast<size_t>(std::ceil(6 * period / kDt));
				expectFound(w, n, seed++);
			}
		}
	}
}

TEST(CycleAnalyser, PredictsLowWindowAtEveryPhase)
{
	// Walk "now" through a whole cycle: the prediction must follow it.
	Wave w{ .periodSec = 3, .duty = 0.4, .noise = 0.3 };
	for (int k = 0; k < 30; k++) {
		w.phaseSec = k * 0.1;
		expectFound(w, 300, 500 + k);
	}
}

TEST(CycleAnalyser, ReportsLowNowOnlyWhenActivityIsLow)
{
	Wave w{ .periodSec = 2, .duty = 0.5, .noise = 0.1 };
	for (int k = 0; k < 20; k++) {
		w.phaseSec = k * 0.1;
		const size_t n = 200;
		CycleEstimate e = analyse(test::sampleWave(w, kDt, n, 700 + k));
		SCOPED_TRACE(describe(w, n, e));
		ASSERT_TRUE(e.periodic);
		// Away from an edge (where one sample of slack is fair), the coming interval is
		// truly low iff the analyser says "low now".
		const double now = static_cast<double>(n) * kDt;
		const bool lowSoon = w.isLow(now + kDt / 2);
		if (w.isLow(now - kDt) != lowSoon || w.isLow(now + 1.5 * kDt) != lowSoon)
			continue;
		EXPECT_EQ(e.nextLowStartSec == 0, lowSoon);
	}
}

TEST(CycleAnalyser, NeedsTwoAndAHalfPeriods)
{
	Wave w{ .periodSec = 4, .noise = 0.1 };
	EXPECT_FALSE(analyse(test::sampleWave(w, kDt, 80, 3)).periodic);	// 2 periods
	EXPECT_TRUE(analyse(test::sampleWave(w, kDt, 120, 3)).periodic);	// 3 periods
}

TEST(CycleAnalyser, CallsWhiteNoiseAperiodic)
{
	for (unsigned seed = 0; seed < 30; seed++) {
		for (size_t n : { 40u, 150u, 600u, 2000u }) {
			CycleEstimate e = analyse(test::whiteNoise(n, seed));
			EXPECT_FALSE(e.periodic) << "seed " << seed << " n " << n << ": " << e.verdict();
		}
	}
}

TEST(CycleAnalyser, CallsRandomWalkAperiodic)
{
	for (unsigned seed = 0; seed < 30; seed++) {
		for (size_t n : { 40u, 150u, 600u, 2000u }) {
			CycleEstimate e = analyse(test::randomWalk(n, seed));
			EXPECT_FALSE(e.periodic) << "seed " << seed << " n " << n << ": " << e.verdict();
		}
	}
}

TEST(CycleAnalyser, CallsConstantAndRampAperiodic)
{
	for (double level : { 0.0, 1.0, 4096.0, 3e9 }) {
		CycleEstimate e = analyse(std::vector<double>(500, level));
		EXPECT_FALSE(e.periodic) << level << ": " << e.verdict();
	}
	std::vector<double> ramp(500);
	for (size_t i = 0; i < ramp.size(); i++)
		ramp[i] = 1e6 + 1e4 * static_cast<double>(i);
	EXPECT_FALSE(analyse(ramp).periodic);
}

TEST(CycleAnalyser, IgnoresDriftUnderACycle)
{
	Wave w{ .periodSec = 2.5, .duty = 0.3, .noise = 0.1 };
	std::vector<double> s = test::sampleWave(w, kDt, 400, 9);
	for (size_t i = 0; i < s.size(); i++)
		s[i] += 2e4 * static_cast<double>(i);	// +8 MB over the series, slow
	CycleEstimate e = analyse(s);
	ASSERT_TRUE(e.periodic) << e.verdict();
	EXPECT_NEAR(e.periodSec, w.periodSec, 0.1 * w.periodSec);
}

TEST(CycleAnalyser, KeepsOnlyTheMostRecentSamples)
{
	CycleAnalyser a(kDt, 100);
	for (int i = 0; i < 250; i++)
		a.addSample(1);
	EXPECT_EQ(a.size(), 100u);

	// A cycle that replaced an older one is what the analyser reports.
	Wave oldW, newW;
	oldW.periodSec = 7;
	newW.periodSec = 2;
	CycleAnalyser b(kDt, 300);
	for (double v : test::sampleWave(oldW, kDt, 600, 1))
		b.addSample(v);
	for (double v : test::sampleWave(newW, kDt, 300, 2))
		b.addSample(v);
	CycleEstimate e = b.estimate();
	ASSERT_TRUE(e.periodic) << e.verdict();
	EXPECT_NEAR(e.periodSec, 2.0, 0.2);
}

TEST(CycleAnalyser, TreatsBogusSamplesAsZero)
{
	Wave w{ .periodSec = 2 };
	std::vector<double> s = test::sampleWave(w, kDt, 200, 4);
	CycleAnalyser a(kDt);
	for (size_t i = 0; i < s.size(); i++) {
		// Every low sample replaced by garbage that must read as 0.
		double v = s[i] < 5e6 ? (i % 2 ? std::numeric_limits<double>::quiet_NaN() : -1.0) : s[i];
		a.addSample(v);
	}
	CycleEstimate e = a.estimate();
	ASSERT_TRUE(e.periodic) << e.verdict();
	EXPECT_NEAR(e.periodSec, 2.0, 0.2);
}

TEST(CycleAnalyser, VerdictSaysWhatItFound)
{
	CycleAnalyser a(kDt);
	EXPECT_EQ(a.estimate().verdict(), "aperiodic (n=0)");

	CycleEstimate e;
	e.periodic = true;
	e.periodSec = 4.02;
	e.dutyCycle = 0.5;
	e.confidence = 0.91;
	e.nextLowStartSec = 1.3;
	e.nextLowEndSec = 3.3;
	EXPECT_EQ(e.verdict(), "periodic T=4.02s duty=0.50 conf=0.91 low in 1.30s (2.00s long)");
	e.nextLowStartSec = 0;
	e.nextLowEndSec = 1.2;
	EXPECT_EQ(e.verdict(), "periodic T=4.02s duty=0.50 conf=0.91 low now (1.20s left)");
}
