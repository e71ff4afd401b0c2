#include "copy_text.h"

#include <fmt/format.h>

namespace stsync {

void append_copy_field(std::string& out, std::string_view value) {
  // Most of a record holds none of the four bytes to escape: skip it eight bytes at a time (the
  // raw JSON of every record passes through here, so this is the client's hottest loop).
  size_t start = 0;
  const char* data = value.data();
  size_t bytewise_until = 0;  // after a word that holds something, its bytes one by one
  for (size_t i = 0; i < value.size(); ++i) {
    if (i >= bytewise_until) {
      while (i + 8 <= value.size()) {
        const std::uint64_t w = load_word(data + i);
        if (word_has_byte_below(w, 14) || word_has_byte(w, '\\')) {
          bytewise_until = i + 8;
          break;
        }
        i += 8;
      }
      if (i >= value.size()) break;
    }
    const char* escape = nullptr;
    switch (value[i]) {
      case '\\': escape = "\\\\"; break;
      case '\n': escape = "\\n"; break;
      case '\r': escape = "\\r"; break;
      case '\t': escape = "\\t"; break;
      default: continue;
    }
    out.append(value.substr(start, i - start));
    out.append(escape);
    start = i + 1;
  }
  out.append(value.substr(start));
}

std::string copy_field_unescape(std::string_view field) {
  std::string out;
  out.reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '\\' || i + 1 == field.size()) {
      out.push_back(field[i]);
      continue;
    }
    switch (field[++i]) {
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      default: out.push_back(field[i]); break;  // "\\" and anything escaped verbatim
    }
  }
  return out;
}

std::string copy_row_field(std::string_view row, size_t index) {
  size_t start = 0;
  for (size_t i = 0; i < index; ++i) {
    const size_t tab = row.find('\t', start);
    if (tab == std::string_view::npos) return {};
    start = tab + 1;
  }
  return copy_field_unescape(row.substr(start, row.find('\t', start) - start));
}

void append_json_string(std::string& out, std::string_view value) {
  out.push_back('"');
  for (unsigned char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

bool replace_nul_in_text(std::string& value) {
  if (value.find('\0') == std::string::npos) return false;
  std::string out;
  out.reserve(value.size() + 8);
  for (char c : value) {
    if (c == '\0') {
      out += "\xEF\xBF\xBD";
    } else {
      out.push_back(c);
    }
  }
  value.swap(out);
  return true;
}

bool replace_nul_in_json(std::string& json) {
  if (json.find("\\u0000") == std::string::npos) return false;
  bool replaced = false;
  for (size_t i = 0; i + 1 < json.size(); ++i) {
    if (json[i] != '\\') continue;
    // An escape: skip its second character so that "\\" never starts a new escape.
    if (json[i + 1] == 'u' && json.compare(i + 2, 4, "0000") == 0) {
      json.replace(i + 2, 4, "fffd");
      replaced = true;
    }
    ++i;
  }
  return replaced;
}

std::string shorten_utf8(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t n = max_bytes;
  // Continuation bytes are 10xxxxxx: back up to the lead byte of the character that does not fit.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return std::string(text.substr(0, n));
}

}  // namespace stsync
