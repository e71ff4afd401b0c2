// What the sandbox server's parts share (not part of its interface): the fault names, small
// text helpers and the sliding windows of the throttle.
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace stsync::sandbox {

extern const char* const kFaultNames[];
extern const int kFaultCount;
// Random faults (a rate with no kinds given) are drawn from the transient ones only: the data
// faults would fail every run that meets them, which is what a test asks for by name.
constexpr int kTransientFaultCount = 13;
// Exactly "application/json": cpp-httplib only compresses content types it knows by full name.
constexpr char kJson[] = "application/json";

std::int64_t steady_ms();
bool iequals(std::string_view a, std::string_view b);
std::optional<std::int64_t> parse_int(std::string_view s);
std::string base64url(std::string_view in);
std::optional<std::string> unbase64url(std::string_view in);
std::uint64_t checksum(std::string_view s);
/// Trims the sliding one-second window and returns its size.
size_t window(std::deque<std::int64_t>& q, std::int64_t now_ms);

}  // namespace stsync::sandbox
