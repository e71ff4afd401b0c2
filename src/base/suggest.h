// "Did you mean …?" for names a user types: subcommands, job names.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace stsync {

/// "; did you mean 'status'?" when one of `candidates` is within a small edit distance of `word`
/// (the nearest; ties: the first), else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace stsync
