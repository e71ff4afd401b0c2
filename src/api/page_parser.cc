#include "page_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <fmt/ranges.h>

#include "copy_text.h"
#include "errors.h"

namespace stsync {
namespace {

using namespace simdjson;
constexpr int kFieldId = -1;
constexpr int kFieldModifiedOn = -2;
constexpr int kFieldActive = -3;
constexpr int kFieldCreatedOn = -4;
constexpr int kFieldChildBase = -100;  // -100 - k: the array of child spec k

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool is_integer_text(std::string_view s) {
  size_t i = (!s.empty() && s[0] == '-') ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

bool fits_integer(std::string_view s, bool int32) {
  const bool negative = s[0] == '-';
  std::string_view digits = s.substr(negative ? 1 : 0);
  while (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
  const std::string_view limit = int32 ? (negative ? "2147483648" : "2147483647")
                                       : (negative ? "9223372036854775808" : "9223372036854775807");
  return digits.size() < limit.size() || (digits.size() == limit.size() && digits <= limit);
}

// JSON number grammar, also used for money that arrives as a string ("1234.50").
bool is_numeric_text(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp;
    if (exp == 0) return false;
  }
  return i == s.size();
}

std::string_view type_name(ondemand::json_type t) {
  switch (t) {
    case ondemand::json_type::array: return "an array";
    case ondemand::json_type::object: return "an object";
    case ondemand::json_type::number: return "a number";
    case ondemand::json_type::string: return "a string";
    case ondemand::json_type::boolean: return "a boolean";
    case ondemand::json_type::null: return "null";
  }
  return "a value";
}

struct FieldError {
  std::string message;
};

}  // namespace

void ParsedPage::clear() {
  has_more = false;
  continue_from.reset();
  total_count.reset();
  records = 0;
  max_modified.reset();
  min_modified.reset();
  min_created.reset();
  max_created.reset();
  without_modified = 0;
  ids.clear();
  duplicate_ids = false;
  row_ends.clear();
  copy_rows.clear();
  for (ChildRows& c : children) {
    c.copy_rows.clear();
    c.record_ends.clear();
  }
  nul_replaced = 0;
  control_escaped = 0;
  quarantined.clear();
}

PageParser::PageParser(const JobSpec& spec, int max_depth) : spec_(spec), max_depth_(max_depth) {
  record_.columns = &spec.columns;
  id_is_field_ = spec.key.size() == 1 && spec.key[0] == std::vector<std::string>{"id"};
  if (id_is_field_) add_path(record_, {"id"}, kFieldId);
  for (const auto& k : spec.key)
    for (size_t i = 0; i < spec.columns.size(); ++i)
      if (!id_is_field_ && spec.columns[i].path == k) {
        key_columns_.push_back(static_cast<int>(i));
        break;
      }
  add_path(record_, {"modifiedOn"}, kFieldModifiedOn);
  add_path(record_, {"active"}, kFieldActive);
  add_path(record_, spec.created_field, kFieldCreatedOn);
  for (size_t i = 0; i < spec.columns.size(); ++i) add_path(record_, spec.columns[i].path, static_cast<int>(i));
  for (size_t k = 0; k < spec.children.size(); ++k) {
    add_path(record_, spec.children[k].path, kFieldChildBase - static_cast<int>(k));
    Walker w;
    w.columns = &spec.children[k].columns;
    for (size_t i = 0; i < w.columns->size(); ++i) add_path(w, (*w.columns)[i].path, static_cast<int>(i));
    w.cells.resize(w.columns->size());
    children_.push_back(std::move(w));
  }
  for (const Walker* w : all_walkers())
    for (const Node& n : w->nodes)
      if (!n.targets.empty() && !n.children.empty())
        throw Error(ErrorKind::config,
                    fmt::format("job {}: field '{}' is both a column and the parent of another "
                                "column; keep one of them",
                                spec.name, n.key));
  record_.cells.resize(spec.columns.size());
  child_arrays_.resize(spec.children.size());
}

std::vector<const PageParser::Walker*> PageParser::all_walkers() const {
  std::vector<const Walker*> out = {&record_};
  for (const Walker& w : children_) out.push_back(&w);
  return out;
}

void PageParser::add_path(Walker& w, const std::vector<std::string>& path, int target) {
  if (w.nodes.empty()) w.nodes.push_back(Node{});
  int node = 0;
  for (const std::string& key : path) {
    int next = child(w, node, key);
    if (next < 0) {
      w.nodes.push_back(Node{key, {}, {}});
      next = static_cast<int>(w.nodes.size() - 1);
      w.nodes[static_cast<size_t>(node)].children.push_back(next);
    }
    node = next;
  }
  w.nodes[static_cast<size_t>(node)].targets.push_back(target);
}

int PageParser::child(const Walker& w, int node, std::string_view key) const {
  for (int c : w.nodes[static_cast<size_t>(node)].children)
    if (w.nodes[static_cast<size_t>(c)].key == key) return c;
  return -1;
}

void PageParser::walk(Walker& w, ondemand::object object, int node) {
  for (auto field : object) {
    std::string_view key = field.unescaped_key().value();
    const int c = child(w, node, key);
    if (c < 0) continue;  // not wanted: the iterator skips the value
    const Node& n = w.nodes[static_cast<size_t>(c)];
    ondemand::value value = field.value().value();
    if (!n.targets.empty()) {
      const bool array_node =
          std::any_of(n.targets.begin(), n.targets.end(), [](int t) { return t <= kFieldChildBase; });
      if (array_node) {
        capture_array(w, n, value, key);
        continue;
      }
      // Several targets on one path (createdOn: the window check and a typed column) each need
      // the value: a typed column reads it, the others copy from that.
      int first = n.targets.front();
      for (int target : n.targets)
        if (target >= 0) first = target;
      if (first >= 0 && std::find(n.targets.begin(), n.targets.end(), kFieldCreatedOn) != n.targets.end()) {
        last_ticks_.reset();
        capture(w, value, first, key);
        const auto& cell = w.cells[static_cast<size_t>(first)];
        created_ = last_ticks_ ? last_ticks_ : cell ? parse_timestamp(*cell) : std::nullopt;
      } else {
        capture(w, value, first, key);
      }
      for (int target : n.targets)
        if (target >= 0 && target != first && first >= 0)
          w.cells[static_cast<size_t>(target)] = w.cells[static_cast<size_t>(first)];
      continue;
    }
    const ondemand::json_type t = value.type().value();
    if (t == ondemand::json_type::object) {
      walk(w, value.get_object().value(), c);
    } else if (t != ondemand::json_type::null) {
      throw FieldError{fmt::format("field '{}' is {}, expected an object", key, type_name(t))};
    }
  }
}

void PageParser::capture_array(Walker& w, const Node& n, ondemand::value value, std::string_view key) {
  // An array kept as child rows (and perhaps also as a jsonb column): its raw text is read once;
  // its elements are walked after the record (emit_children), with a parser of their own.
  const ondemand::json_type t = value.type().value();
  std::string_view text;
  if (t == ondemand::json_type::array) text = value.get_array().value().raw_json().value();
  else if (t == ondemand::json_type::object) text = value.get_object().value().raw_json().value();
  else text = trim(value.raw_json_token());
  for (int target : n.targets) {
    if (target <= kFieldChildBase) {
      // null, or anything but an array, means no child rows (as `items: null` does).
      child_arrays_[static_cast<size_t>(kFieldChildBase - target)] =
          t == ondemand::json_type::array ? text : std::string_view();
      continue;
    }
    if (target < 0) continue;
    const ColumnSpec& col = (*w.columns)[static_cast<size_t>(target)];
    std::optional<std::string>& cell = w.cells[static_cast<size_t>(target)];
    if (t == ondemand::json_type::null) continue;
    if (col.type != ColumnType::jsonb && col.type != ColumnType::text)
      throw FieldError{fmt::format("field '{}' is {}, expected {}", key, type_name(t), column_type_sql(col.type))};
    cell.emplace(text);
    if (col.type == ColumnType::jsonb ? replace_nul_in_json(*cell) : replace_nul_in_text(*cell)) ++nul_replaced_;
  }
}

void PageParser::capture(Walker& w, ondemand::value value, int target, std::string_view key) {
  const ondemand::json_type t = value.type().value();
  auto wrong = [&](std::string_view expected) {
    return FieldError{fmt::format("field '{}' is {}, expected {}", key, type_name(t), expected)};
  };
  if (target == kFieldId) {
    if (spec_.key_type == ColumnType::text) {
      // GUIDs and other string ids; a numeric id is kept as its digits.
      if (t == ondemand::json_type::string) id_.emplace(value.get_string().value());
      else if (t == ondemand::json_type::number) id_.emplace(trim(value.raw_json_token()));
      else if (t != ondemand::json_type::null) throw wrong("a string or number id");
      if (id_ && replace_nul_in_text(*id_)) ++nul_replaced_;
      return;
    }
    if (t != ondemand::json_type::number) throw wrong("an integer id");
    std::string_view tok = trim(value.raw_json_token());
    if (!is_integer_text(tok) || !fits_integer(tok, false))
      throw FieldError{fmt::format("field 'id' is {}, not a 64-bit integer", tok)};
    id_.emplace(std::to_string(value.get_int64().value()));
    return;
  }
  if (target == kFieldModifiedOn) {
    if (t == ondemand::json_type::null) {
      modified_null_ = true;
      return;
    }
    if (t != ondemand::json_type::string) throw wrong("a timestamp string");
    std::string_view s = value.get_string().value();
    modified_ = parse_timestamp(s);
    if (!modified_) throw FieldError{fmt::format("field 'modifiedOn' is '{}', not a timestamp", s)};
    return;
  }
  if (target == kFieldCreatedOn) {
    // Only for the window check; a bad one is left to the typed column that may want it.
    if (t == ondemand::json_type::string) created_ = parse_timestamp(value.get_string().value());
    return;
  }
  if (target == kFieldActive) {
    if (t == ondemand::json_type::null) return;
    if (t != ondemand::json_type::boolean) throw wrong("true or false");
    active_ = value.get_bool().value();
    return;
  }
  std::optional<std::string>& cell = w.cells[static_cast<size_t>(target)];
  if (t == ondemand::json_type::null) return;
  cell.emplace();
  std::string& out = *cell;
  const ColumnSpec& col = (*w.columns)[static_cast<size_t>(target)];
  switch (col.type) {
    case ColumnType::bigint:
    case ColumnType::integer: {
      std::string_view tok;
      if (t == ondemand::json_type::number) tok = trim(value.raw_json_token());
      else if (t == ondemand::json_type::string) tok = value.get_string().value();
      else throw wrong("an integer");
      if (!is_integer_text(tok)) throw FieldError{fmt::format("field '{}' is '{}', not an integer", key, tok)};
      if (!fits_integer(tok, col.type == ColumnType::integer))
        throw FieldError{fmt::format("field '{}' is {}, too large for column {} ({})", key, tok,
                                     col.name, column_type_sql(col.type))};
      out.assign(tok);
      break;
    }
    case ColumnType::numeric: {
      // The token's own digits: never through a double, so 20 significant digits stay exact.
      std::string_view tok;
      if (t == ondemand::json_type::number) tok = trim(value.raw_json_token());
      else if (t == ondemand::json_type::string) tok = value.get_string().value();
      else throw wrong("a number");
      if (!is_numeric_text(tok)) throw FieldError{fmt::format("field '{}' is '{}', not a number", key, tok)};
      out.assign(tok);
      break;
    }
    case ColumnType::text:
      if (t == ondemand::json_type::string) out.assign(value.get_string().value());
      else if (t == ondemand::json_type::object) out.assign(value.get_object().value().raw_json().value());
      else if (t == ondemand::json_type::array) out.assign(value.get_array().value().raw_json().value());
      else out.assign(trim(value.raw_json_token()));
      if (replace_nul_in_text(out)) ++nul_replaced_;
      break;
    case ColumnType::boolean:
      if (t != ondemand::json_type::boolean) throw wrong("true or false");
      out.assign(value.get_bool().value() ? "t" : "f");
      break;
    case ColumnType::timestamptz:
    case ColumnType::date: {
      if (t != ondemand::json_type::string) throw wrong("a date string");
      std::string_view s = value.get_string().value();
      auto ticks = parse_timestamp(s);
      if (!ticks) throw FieldError{fmt::format("field '{}' is '{}', not a date or time", key, s)};
      last_ticks_ = ticks;
      out = col.type == ColumnType::date ? format_timestamp(*ticks, 0).substr(0, 10)
                                         : format_timestamp_pg(*ticks);
      break;
    }
    case ColumnType::jsonb:
      if (t == ondemand::json_type::object) out.assign(value.get_object().value().raw_json().value());
      else if (t == ondemand::json_type::array) out.assign(value.get_array().value().raw_json().value());
      else out.assign(trim(value.raw_json_token()));
      if (replace_nul_in_json(out)) ++nul_replaced_;
      break;
  }
}

void PageParser::append_cells(std::string& row, const Walker& w) {
  for (const auto& cell : w.cells) {
    row += '\t';
    if (cell) append_copy_field(row, *cell);
    else row += "\\N";
  }
}

void PageParser::emit_children(std::int64_t tenant, const std::string& parent_id, ParsedPage& out) {
  for (size_t k = 0; k < children_.size(); ++k) {
    const std::string_view text = child_arrays_[k];
    if (text.empty()) continue;
    Walker& w = children_[k];
    std::string& rows = out.children[k].copy_rows;
    // The array's own text, parsed apart: the record's iterator has moved past it.
    child_text_.assign(text);
    child_text_.reserve(child_text_.size() + SIMDJSON_PADDING);
    ondemand::document doc = child_parser_.iterate(
        padded_string_view(child_text_.data(), child_text_.size(), child_text_.capacity()));
    int position = 0;
    for (auto element_result : doc.get_array()) {
      ondemand::value element = element_result.value();
      ++position;
      for (auto& c : w.cells) c.reset();
      const ondemand::json_type t = element.type().value();
      try {
        if (t == ondemand::json_type::object) {
          ondemand::object object = element.get_object().value();
          child_raw_.assign(object.raw_json().value());
          object.reset().value();
          walk(w, object, 0);
        } else if (t == ondemand::json_type::array) {
          child_raw_.assign(element.get_array().value().raw_json().value());
        } else {
          child_raw_.assign(trim(element.raw_json_token()));
        }
      } catch (const FieldError& e) {
        throw FieldError{fmt::format("{}[{}]: {}", spec_.children[k].table, position, e.message)};
      }
      replace_nul_in_json(child_raw_);  // as in the parent's raw, which these rows mirror
      rows += std::to_string(tenant);
      rows += '\t';
      append_copy_field(rows, parent_id);
      rows += '\t';
      rows += std::to_string(position);
      append_cells(rows, w);
      rows += '\t';
      append_copy_field(rows, child_raw_);
      rows += '\n';
    }
  }
}

void PageParser::parse_record(ondemand::object object, std::int64_t tenant, ParsedPage& out) {
  for (auto& c : record_.cells) c.reset();
  for (auto& a : child_arrays_) a = {};
  id_.reset();
  modified_.reset();
  created_.reset();
  modified_null_ = false;
  active_ = true;
  scratch_.assign(object.raw_json().value());
  object.reset().value();
  walk(record_, object, 0);
  make_key(out);
  emit_children(tenant, *id_, out);

  std::string& row = out.copy_rows;
  row += std::to_string(tenant);
  row += '\t';
  append_copy_field(row, *id_);
  if (!spec_.parent.empty()) {
    row += '\t';
    append_copy_field(row, parent_);
  }
  append_cells(row, record_);
  row += '\t';
  if (modified_) {
    row += format_timestamp_pg(*modified_);
    if (!out.max_modified || *modified_ > *out.max_modified) out.max_modified = modified_;
    if (!out.min_modified || *modified_ < *out.min_modified) out.min_modified = modified_;
  } else {
    row += "\\N";
    ++out.without_modified;
  }
  if (created_) {
    if (!out.min_created || *created_ < *out.min_created) out.min_created = created_;
    if (!out.max_created || *created_ > *out.max_created) out.max_created = created_;
  }
  row += active_ ? "\tt\t" : "\tf\t";
  if (replace_nul_in_json(scratch_)) ++nul_replaced_;
  append_copy_field(row, scratch_);
  row += '\t';
  row += std::to_string(out.records);
  row += '\n';
  out.ids.push_back(*id_);
  if (!seen_ids_.insert(*id_).second) out.duplicate_ids = true;
  for (ParsedPage::ChildRows& c : out.children) c.record_ends.push_back(c.copy_rows.size());
  out.row_ends.push_back(row.size());
  ++out.records;
}

void PageParser::make_key(ParsedPage& out) {
  if (id_is_field_) {
    if (!id_) throw FieldError{"the record has no 'id'"};
    return;
  }
  if (spec_.key.empty()) {
    // No identity in the record: its place in the listing (of its parent, for a per-parent job).
    const std::int64_t position = position_base_ + out.records + static_cast<std::int64_t>(out.quarantined.size());
    id_.emplace(spec_.parent.empty() ? std::to_string(position) : parent_ + "/" + std::to_string(position));
    return;
  }
  std::string key = key_columns_.size() > 1 ? "[" : "";
  for (size_t i = 0; i < key_columns_.size(); ++i) {
    const auto& cell = record_.cells[static_cast<size_t>(key_columns_[i])];
    const ColumnSpec& col = spec_.columns[static_cast<size_t>(key_columns_[i])];
    if (!cell) throw FieldError{fmt::format("the record has no '{}' (a field of its key)", fmt::join(col.path, "."))};
    if (key_columns_.size() == 1) {
      if (spec_.key_type == ColumnType::bigint && !is_integer_text(*cell))
        throw FieldError{fmt::format("key field '{}' is '{}', not an integer", fmt::join(col.path, "."), *cell)};
      key = *cell;
    } else {
      if (i) key += ',';
      append_json_string(key, *cell);
    }
  }
  if (key_columns_.size() > 1) key += ']';
  id_.emplace(std::move(key));
}

template <typename ObjectOf>
void PageParser::parse_guarded(ObjectOf&& object_of, std::int64_t tenant, ParsedPage& out) {
  // A record that fails leaves nothing behind (its child rows are cut off again), and goes to
  // quarantine or fails the page naming its position and id.
  std::vector<size_t> child_sizes;
  for (const ParsedPage::ChildRows& c : out.children) child_sizes.push_back(c.copy_rows.size());
  id_.reset();
  try {
    parse_record(object_of(), tenant, out);
  } catch (const FieldError& e) {
    for (size_t k = 0; k < child_sizes.size(); ++k) out.children[k].copy_rows.resize(child_sizes[k]);
    const std::string message = fmt::format("record #{}{}: {}", out.records + out.quarantined.size() + 1,
                                            id_ ? fmt::format(" (id {})", *id_) : std::string(), e.message);
    if (!spec_.quarantine) throw Error(ErrorKind::bad_data, message);
    replace_nul_in_json(scratch_);
    out.quarantined.push_back({id_, message, scratch_});
  } catch (const simdjson_error& e) {
    throw Error(ErrorKind::bad_data, fmt::format("record #{}{}: invalid JSON: {}", out.records + 1,
                                                 id_ ? fmt::format(" (id {})", *id_) : std::string(), e.what()));
  }
}

void PageParser::parse_records_of(const std::string& body, const PageLayout& layout, std::int64_t tenant,
                                  ParsedPage& out) {
  // Each record is parsed as a small document of its own: simdjson's buffers are sized by the
  // largest record, not by the page (a 15 MB page would otherwise cost ~4 bytes per byte).
  for (const auto& [begin, end] : layout.records) {
    parse_guarded(
        [&] {
          record_text_.assign(body, begin, end - begin);
          record_text_.reserve(record_text_.size() + SIMDJSON_PADDING);
          ondemand::document& doc = record_doc_ = record_parser_.iterate(
              padded_string_view(record_text_.data(), record_text_.size(), record_text_.capacity()));
          return doc.get_object().value();
        },
        tenant, out);
  }
}

void PageParser::parse(std::string& body, std::int64_t tenant, ParsedPage& out) {
  out.clear();
  seen_ids_.clear();
  out.children.resize(spec_.children.size());
  nul_replaced_ = 0;
  PageLayout layout;
  out.control_escaped = prepare_page(body, max_depth_, spec_.response == ResponseShape::object ? nullptr : &layout);
  if (spec_.response == ResponseShape::object) {
    // The response is the record itself (business hours, a job's booked log): one row.
    parse_guarded(
        [&] {
          record_text_.assign(body);
          record_text_.reserve(record_text_.size() + SIMDJSON_PADDING);
          ondemand::document& doc = record_doc_ = record_parser_.iterate(
              padded_string_view(record_text_.data(), record_text_.size(), record_text_.capacity()));
          ondemand::object object;
          if (doc.get_object().get(object) != SUCCESS) throw FieldError{"the response is not a JSON object"};
          return object;
        },
        tenant, out);
    out.nul_replaced = nul_replaced_;
    return;
  }
  // The COPY text is a multiple of the page's size that depends on the job's columns: reserve it
  // once, from what the previous page needed, rather than grow it by doubling (a doubling copies
  // the rows and holds both buffers for a moment).
  const size_t expected = static_cast<size_t>(static_cast<double>(body.size()) * rows_per_json_byte_ * 1.05);
  if (out.copy_rows.capacity() < expected) out.copy_rows.reserve(expected);
  std::string envelope;
  std::string* document = &body;
  if (layout.found) {
    // The envelope alone ({"hasMore":…,"data":[],…}), then the records one by one.
    envelope.reserve(body.size() - (layout.data_end - layout.data_begin) + SIMDJSON_PADDING);
    envelope.append(body, 0, layout.data_begin);
    envelope.append(body, layout.data_end, std::string::npos);
    document = &envelope;
  }
  if (document->capacity() < document->size() + SIMDJSON_PADDING)
    document->reserve(document->size() + SIMDJSON_PADDING);
  bool saw_data = false;
  try {
    ondemand::document doc =
        parser_.iterate(padded_string_view(document->data(), document->size(), document->capacity()));
    ondemand::object top;
    if (doc.get_object().get(top) != SUCCESS)
      throw Error(ErrorKind::bad_data, "the response is not a JSON object");
    for (auto field : top) {
      std::string_view key = field.unescaped_key().value();
      ondemand::value v = field.value().value();
      if (key == "data") {
        ondemand::array data;
        if (v.get_array().get(data) != SUCCESS)
          throw Error(ErrorKind::bad_data, "'data' is not an array");
        saw_data = true;
        if (layout.found) {
          parse_records_of(body, layout, tenant, out);
          continue;
        }
        for (auto element : data) parse_guarded([&] { return element.value().get_object().value(); }, tenant, out);
      } else if (key == "hasMore") {
        bool b = false;
        if (v.get_bool().get(b) != SUCCESS) throw Error(ErrorKind::bad_data, "'hasMore' is not a boolean");
        out.has_more = b;
      } else if (key == "continueFrom") {
        std::string_view s;
        if (v.get_string().get(s) == SUCCESS) out.continue_from.emplace(s);
      } else if (key == "totalCount") {
        std::int64_t n;
        if (v.get_int64().get(n) == SUCCESS) out.total_count = n;
      }
    }
  } catch (const simdjson_error& e) {
    throw Error(ErrorKind::bad_data, fmt::format("the page is not valid JSON: {}", e.what()));
  }
  if (!saw_data) throw Error(ErrorKind::bad_data, "the response has no 'data' array");
  out.nul_replaced = nul_replaced_;
  if (body.size() > (1 << 16))
    rows_per_json_byte_ = std::max(rows_per_json_byte_, static_cast<double>(out.copy_rows.size()) / body.size());
}

}  // namespace stsync
