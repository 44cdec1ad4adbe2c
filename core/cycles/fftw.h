// SPDX-License-Identifier: GPL-2.0-or-later
// Owners for FFTW buffers and plans (internal to core/cycles).
//
// FFTW's planner keeps global state: every call that creates or destroys a plan must be
// serialised (only fftw_execute* is thread-safe), so FftwPlan takes fftwPlannerLock() for both.
// Plans are made with FFTW_ESTIMATE, which never touches the arrays while planning; that lets
// us plan on the buffers we already filled.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>

#include <fftw3.h>

namespace ferry::cycles {

// The process-wide lock around FFTW's planner. It guards the library's global state, which
// cannot be made per-object.
std::mutex &fftwPlannerLock();

struct FftwFree {
	void operator()(void *p) const { fftw_free(p); }
};

// fftw_malloc'ed array: aligned for FFTW's SIMD code paths. Returns nullptr on ENOMEM.
template<typename T>
using FftwArray = std::unique_ptr<T[], FftwFree>;

template<typename T>
FftwArray<T> fftwAlloc(size_t n)
{
	return FftwArray<T>(static_cast<T *>(fftw_malloc(sizeof(T) * n)));
}

class FftwPlan {
public:
	FftwPlan() = default;
	// A real-to-complex plan of size n: in[n] -> out[n / 2 + 1].
	static FftwPlan r2c(int n, double *in, fftw_complex *out)
	{
		std::lock_guard<std::mutex> lock(fftwPlannerLock());
		return FftwPlan(fftw_plan_dft_r2c_1d(n, in, out, FFTW_ESTIMATE));
	}
	// The inverse: in[n / 2 + 1] -> out[n], unnormalised (scaled by n). FFTW's c2r
	// overwrites its input array.
	static FftwPlan c2r(int n, fftw_complex *in, double *out)
	{
		std::lock_guard<std::mutex> lock(fftwPlannerLock());
		return FftwPlan(fftw_plan_dft_c2r_1d(n, in, out, FFTW_ESTIMATE));
	}

	bool valid() const { return plan_ != nullptr; }
	// Runs the plan on the arrays it was made for. Thread-safe per FFTW's contract.
	void execute() const { fftw_execute(plan_.get()); }

private:
	// Destroying a plan is a planner call too: under the lock.
	struct Destroy {
		void operator()(fftw_plan p) const
		{
			std::lock_guard<std::mutex> lock(fftwPlannerLock());
			fftw_destroy_plan(p);
		}
	};

	explicit FftwPlan(fftw_plan p) : plan_(p) {}

	std::unique_ptr<std::remove_pointer_t<fftw_plan>, Destroy> plan_; // move-only
};

// Buffers and the plan pair for one transform size m. Members are destroyed in reverse order,
// so the plans go before the arrays they were made for.
struct FftWorkspace {
	size_t m = 0;
	FftwArray<double> real;			// m values
	FftwArray<fftw_complex> spectrum;	// m / 2 + 1 values
	FftwPlan forward;			// real -> spectrum
	FftwPlan inverse;			// spectrum -> real (overwrites spectrum)

	// nullptr if FFTW cannot allocate or plan.
	static std::unique_ptr<FftWorkspace> make(size_t m)
	{
		auto w = std::make_unique<FftWorkspace>();
		w->m = m;
		w->real = fftwAlloc<double>(m);
		w->spectrum = fftwAlloc<fftw_complex>(m / 2 + 1);
		if (!w->real || !w->spectrum)
			return nullptr;
		w->forward = FftwPlan::r2c(static_cast<int>(m), w->real.get(), w->spectrum.get());
		w->inverse = FftwPlan::c2r(static_cast<int>(m), w->spectrum.get(), w->real.get());
		if (!w->forward.valid() || !w->inverse.valid())
			return nullptr;
		return w;
	}
};

} // namespace ferry::cycles
