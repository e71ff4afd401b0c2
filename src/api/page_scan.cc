#include "page_scan.h"

#include <fmt/format.h>
#include <simdjson.h>

#include "errors.h"

namespace stsync {

int prepare_page(std::string& body, int max_depth, PageLayout* layout) {
  // One pass over the bytes: the nesting depth (simdjson's on-demand parser does not bound the
  // depth of values it skips, and PostgreSQL's jsonb parser recurses), raw control characters
  // inside strings, and where each record of the top-level "data" array starts and ends. JSON
  // forbids raw control characters, PostgreSQL refuses them, simdjson refuses the whole page
  // for them; the same string with the character escaped (\u0007) is the value the server
  // meant, so it is stored that way rather than losing the record.
  int depth = 0, deepest = 0, escaped = 0;
  bool in_string = false;
  std::string fixed;
  size_t copied = 0;
  // Offsets in the page as it will be after escaping.
  auto out_pos = [&](size_t i) { return fixed.size() + i - copied; };
  size_t string_begin = 0, key_begin = 0, key_end = 0;
  bool in_data = false, layout_ok = layout != nullptr, expect_record = true;
  size_t record_begin = 0;
  if (layout) *layout = PageLayout{};
  // A plain byte loop: JSON strings are mostly shorter than a word, so word-at-a-time skipping
  // (as in append_copy_field) measured slower here.
  for (size_t i = 0; i < body.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(body[i]);
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
        if (depth == 1) {
          key_begin = string_begin;
          key_end = i;
        }
      } else if (c < 0x20) {
        fixed.append(body, copied, i - copied);
        fixed += fmt::format("\\u{:04x}", c);
        copied = i + 1;
        ++escaped;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        string_begin = i + 1;
        if (in_data && depth == 2) layout_ok = false;  // a string element: not a record
        break;
      case '{':
      case '[':
        if (++depth > deepest) deepest = depth;
        if (depth == 2 && c == '[' && layout_ok && !layout->found &&
            std::string_view(body).substr(key_begin, key_end - key_begin) == "data") {
          in_data = layout->found = true;
          layout->data_begin = out_pos(i) + 1;
        } else if (in_data && depth == 3) {
          if (c != '{' || !expect_record) layout_ok = false;
          record_begin = out_pos(i);
          expect_record = false;
        }
        break;
      case '}':
      case ']':
        if (in_data && depth == 3 && layout_ok) layout->records.emplace_back(record_begin, out_pos(i) + 1);
        if (in_data && depth == 2) {
          in_data = false;
          if (layout_ok) layout->data_end = out_pos(i);
          if (!layout->records.empty() && expect_record) layout_ok = false;  // "[{…},]"
        }
        --depth;
        break;
      case ',':
        if (in_data && depth == 2) {
          if (expect_record) layout_ok = false;  // "[,{…}]" or "{…},,{…}"
          expect_record = true;
        }
        break;
      case ' ':
      case '\t':
      case '\n':
      case '\r': break;
      default:
        if (in_data && depth == 2) layout_ok = false;  // a number, true, null… as an element
        break;
    }
  }
  if (deepest > max_depth)
    throw Error(ErrorKind::bad_data, fmt::format("the page nests JSON {} levels deep, beyond max_json_depth ({}); "
                                                 "refused before parsing",
                                                 deepest, max_depth));
  if (escaped > 0) {
    fixed.append(body, copied, std::string::npos);
    fixed.reserve(fixed.size() + simdjson::SIMDJSON_PADDING);
    body.swap(fixed);
  }
  if (layout && (!layout_ok || !layout->found || in_string || depth != 0)) *layout = PageLayout{};
  return escaped;
}

}  // namespace stsync
