// The two text encodings stsync writes by hand: PostgreSQL COPY text fields and JSON strings.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace stsync {

/// Appends `value` as one field of COPY's text format: backslash, newline, carriage return and
/// tab are escaped, so the field can never be mistaken for a delimiter, a row end or \N.
/// Precondition: `value` holds no NUL byte (PostgreSQL text cannot hold one; see
/// replace_nul_in_text).
void append_copy_field(std::string& out, std::string_view value);

/// Word-at-a-time byte tests (SWAR): does any of the 8 bytes of `w` equal `b` / lie below `n`
/// (n <= 128)? They may answer true for a word that holds no such byte (then the caller looks
/// byte by byte), never false for one that does.
inline bool word_has_byte(std::uint64_t w, unsigned char b) {
  const std::uint64_t x = w ^ (0x0101010101010101ULL * b);
  return ((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL) != 0;
}
inline bool word_has_byte_below(std::uint64_t w, unsigned n) {
  return ((w - 0x0101010101010101ULL * n) & ~w & 0x8080808080808080ULL) != 0;
}
inline std::uint64_t load_word(const char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

/// The inverse of append_copy_field: one field of a COPY text row back to its value.
std::string copy_field_unescape(std::string_view field);

/// Field `index` (0-based) of one COPY text row (no trailing newline), unescaped.
std::string copy_row_field(std::string_view row, size_t index);

/// Appends `value` as a JSON string literal with its quotes; control characters are escaped.
void append_json_string(std::string& out, std::string_view value);

/// The documented NUL policy for text columns: every NUL byte becomes U+FFFD (the Unicode
/// replacement character). Returns true when something was replaced.
bool replace_nul_in_text(std::string& value);

/// The same policy for JSON text bound for jsonb: every `\u0000` escape inside a string becomes
/// `\ufffd`. Escaped backslashes (`\\u0000`) are left alone. Returns true when replaced.
bool replace_nul_in_json(std::string& json);

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a UTF-8 character
/// boundary (a value shortened to a column never ends in half a character).
std::string shorten_utf8(std::string_view text, size_t max_bytes);

}  // namespace stsync
