// SPDX-License-Identifier: GPL-2.0-or-later
// A role's state (seeder, leecher): one atomic value whose every move is checked against the
// role's table of legal moves and logged. An illegal move is refused (EPROTO) and leaves the
// state as it was: it means a confused peer or a bug, never something to carry on from.
#pragma once

#include <atomic>
#include <string>

#include "ferry/base/log.h"
#include "ferry/base/result.h"

namespace ferry {

template <typename State>
class StateMachine {
public:
	using NameFn = const char *(*)(State);
	using LegalFn = bool (*)(State from, State to);

	StateMachine(State initial, NameFn name, LegalFn legal) : state_(initial), name_(name), legal_(legal) {}

	State get() const { return state_.load(); }

	// Any thread. `who` names the object in the log line ("[leecher vm1] state a -> b").
	Status moveTo(State to, const std::string &who)
	{
		State from = state_.load();
		do {
			if (!legal_(from, to))
				return Error::format(EPROTO, "illegal transition {} -> {}", name_(from), name_(to));
		} while (!state_.compare_exchange_weak(from, to));
		FERRY_LOG(Info, who, "state {} -> {}", name_(from), name_(to));
		return {};
	}

private:
	std::atomic<State> state_;
	const NameFn name_;
	const LegalFn legal_;
};

} // namespace ferry
