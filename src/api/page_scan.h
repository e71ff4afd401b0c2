// A page's bytes before simdjson sees them: how deep it nests, raw control characters inside
// strings, and where its records are (so that one bad record can be set aside alone).
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace stsync {

/// Where the records of a page are: the inside of its top-level "data" array and each element.
struct PageLayout {
  bool found = false;  // a "data" array of objects, separated by commas, was found
  size_t data_begin = 0, data_end = 0;                // between the brackets
  std::vector<std::pair<size_t, size_t>> records;     // [begin, end) of each element
};

/// Checks a page before parsing: throws Error(bad_data) when it nests deeper than `max_depth`,
/// and rewrites raw control characters inside strings as \u escapes (the same value). Returns
/// how many it escaped. Keeps simdjson's padding. With `layout`, also finds the records (in the
/// page as rewritten); layout->found stays false when the page is not shaped as expected (the
/// whole-document parse then reports what is wrong).
int prepare_page(std::string& body, int max_depth, PageLayout* layout = nullptr);

}  // namespace stsync
