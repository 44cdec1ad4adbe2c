// SPDX-License-Identifier: GPL-2.0-or-later
// Deterministic synthetic activity series with a known period, phase and duty cycle, and
// the ground truth to check predictions against.
#pragma once

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

namespace ferry::test {

enum class Shape {
	Square,		// high for `duty` of the period, low otherwise
	Pulse,		// a sin^2 bump over `duty` of the period (smooth edges)
	Sine,		// a plain sinusoid (duty is 0.5 by construction)
};

struct Wave {
	Shape shape = Shape::Square;
	double periodSec = 4;
	double duty = 0.5;
	double phaseSec = 0;	// the cycle (start of the high part) begins at t = -phaseSec
	double low = 1e6;	// bytes per sample in the low part
	double high = 11e6;	// bytes per sample at the top of the high part
	double noise = 0;	// Gaussian noise, standard deviation as a fraction of (high - low)

	// Position within the cycle, 0..1, of time t.
	double cyclePos(double t) const
	{
		double c = std::fmod(t + phaseSec, periodSec) / periodSec;
		return c < 0 ? c + 1 : c;
	}

	double clean(double t) const
	{
		const double c = cyclePos(t);
		double a = 0;
		switch (shape) {
		case Shape::Square:
			a = c < duty ? 1 : 0;
			break;
		case Shape::Pulse:
			a = c < duty ? std::pow(std::sin(std::numbers::pi * c / duty), 2) : 0;
			break;
		case Shape::Sine:
			a = 0.5 + 0.5 * std::cos(2 * std::numbers::pi * c);
			break;
		}
		return low + a * (high - low);
	}

	// Ground truth: the activity at t is below the level halfway between low and high.
	bool isLow(double t) const { return clean(t) < (low + high) / 2; }
};

// Sample i measures the interval (i*dt, (i+1)*dt]; its value is the activity at the interval's
// midpoint plus noise, clamped at 0 (bytes). "Now" after n samples is n*dt.
inline std::vector<double> sampleWave(const Wave &w, double dt, size_t n, unsigned seed)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<double> gauss(0.0, w.noise * (w.high - w.low));
	std::vector<double> out(n);
	for (size_t i = 0; i < n; i++) {
		double v = w.clean((static_cast<double>(i) + 0.5) * dt);
		if (w.noise > 0)
			v += gauss(rng);
		out[i] = std::max(0.0, v);
	}
	return out;
}

inline std::vector<double> whiteNoise(size_t n, unsigned seed)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<double> gauss(5e6, 2e6);
	std::vector<double> out(n);
	for (double &v : out)
		v = std::max(0.0, gauss(rng));
	return out;
}

// A random walk kept positive by starting far above zero.
inline std::vector<double> randomWalk(size_t n, unsigned seed)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<double> step(0.0, 1e5);
	std::vector<double> out(n);
	double v = 1e7;
	for (double &x : out) {
		v = std::max(0.0, v + step(rng));
		x = v;
	}
	return out;
}

} // namespace ferry::test
