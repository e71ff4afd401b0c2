// `stsync quarantine` without --retry or --discard: the records still in quarantine.
#pragma once
#include <string>

#include "quarantine.h"

namespace stsync {

/// The records still in quarantine (not stored since), newest first: a text table or JSON.
std::string render_quarantine(const Settings& settings, const QuarantineFilter& filter, bool json);

}  // namespace stsync
