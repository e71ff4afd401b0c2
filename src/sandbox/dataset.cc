#include "sandbox/dataset.h"

#include <algorithm>
#include <numeric>
#include <tuple>

namespace stsync::sandbox {

std::uint64_t Rng::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  Rng r(a * 0x100000001B3ULL ^ b);
  return r.next();
}

namespace {

constexpr Ticks kDay = 86400 * kTicksPerSecond;

// Ids above 2^53 (where a double loses integers) for every 40th row: they must survive exactly.
constexpr std::int64_t kBigIdBase = 9007199254740993LL;

Ticks truncate_to_digits(Ticks t, int digits) {
  Ticks unit = 1;
  for (int i = digits; i < 7; ++i) unit *= 10;
  return t - (t % unit + unit) % unit;
}

std::uint64_t resource_salt(const std::string& name) {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

void append_rows(PageRows& out, const Row& row) {
  if (out.count > 0) out.data.push_back(',');
  out.data += row.json;
  ++out.count;
}

}  // namespace

Dataset::Dataset(DatasetOptions options) : options_(std::move(options)) {
  // The real API's clock is the real time: so is the sandbox's at start (whole seconds), so that a
  // client's check of the server's Date against its own clock meets what it would in production.
  if (options_.clock_start == 0) options_.clock_start = now_ticks() / kTicksPerSecond * kTicksPerSecond;
  reset();
}

void Dataset::reset() {
  std::lock_guard lock(mutex_);
  clock_offset_ = 0;
  real_start_ = now_ticks();
  build_locked();
}

std::int64_t initial_row_id(int i) { return (i % 40 == 39) ? kBigIdBase + 2LL * i : 1000 + 3LL * i; }

void Dataset::build_locked() {
  tables_.clear();
  tenant_counts_.clear();
  for (const TenantSetup& tenant : options_.tenants) tenant_counts_[tenant.id] = tenant.counts;
  // Per-parent resources last: their rows are spread over their parents' rows.
  for (int per_parent = 0; per_parent < 2; ++per_parent)
    for (const TenantSetup& tenant : options_.tenants)
      for (const auto& [resource, count] : tenant.counts) {
        const ResourceDef* def = find_resource(resource);
        if (def == nullptr || count < 0) continue;
        const bool is_child = def->cat != nullptr && !def->cat->parent.empty();
        if (is_child == (per_parent == 1)) build_table_locked(tenant, resource, count);
      }
  // A tenant always has its singletons (business hours, task lookups): the API serves one
  // object, never an empty list.
  for (const TenantSetup& tenant : options_.tenants)
    for (const ResourceDef& def : builtin_resources())
      if (def.cat != nullptr && def.cat->response == "object" && def.cat->parent.empty() &&
          table_locked(tenant.id, def.name) == nullptr)
        build_table_locked(tenant, def.name, 1);
}

void Dataset::build_table_locked(const TenantSetup& tenant, const std::string& resource, int count) {
  const ResourceDef* def = find_resource(resource);
  const Ticks start = options_.clock_start;
  Table& t = tables_[{tenant.id, resource}];
  t.def = def;
  const Table* parents = nullptr;
  if (def->cat != nullptr && !def->cat->parent.empty()) {
    parents = table_locked(tenant.id, def->cat->parent);
    if (parents == nullptr || parents->rows.empty()) count = 0;  // no parents, no children
  }
  // An endpoint that answers one object holds one row (per parent, for a per-parent one).
  if (def->cat != nullptr && def->cat->response == "object")
    count = parents != nullptr ? std::min<int>(count, static_cast<int>(parents->rows.size())) : std::min(count, 1);
  const std::uint64_t salt = mix_seed(options_.seed, resource_salt(resource) ^ tenant.id);
  t.churn_rng = Rng(salt);
  Rng rng(salt ^ 0xA5A5A5A5ULL);
  const Ticks span = 400 * kDay;
  const int shared_begin = count / 3;
  const int shared_end = shared_begin + std::min(300, count / 4);
  const Ticks shared_instant = start - 30 * kDay;
  t.rows.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    RecordMeta m;
    m.tenant = tenant.id;
    m.id = initial_row_id(i);
    m.tenant_counts = &tenant_counts_[tenant.id];
    if (parents != nullptr) m.parent = parents->rows[static_cast<size_t>(i) % parents->rows.size()].meta.id;
    m.fraction_digits = i % 8;
    const Ticks step = span / std::max(count, 1);
    m.created = truncate_to_digits(
        std::min(start - 2 * kDay,
                 start - span + step * i + static_cast<Ticks>(rng.below(static_cast<std::uint64_t>(step) + 1))),
        m.fraction_digits);
    Ticks modified = m.created + static_cast<Ticks>(rng.below(20 * kDay));
    if (i >= shared_begin && i < shared_end) {
      modified = shared_instant;
      m.fraction_digits = 3;
    }
    modified = std::min(modified, start - kDay);
    m.modified = truncate_to_digits(modified, m.fraction_digits);
    if (def->modified_may_be_null && i % 97 == 13) m.modified.reset();
    m.active = i % 11 != 5;
    Ticks changed_at = m.modified.value_or(m.created);
    if (options_.quirks.timestamp_styles && i % 5 != 0)
      m.time_style = i % 5 <= 2 ? RecordMeta::TimeStyle::offset : RecordMeta::TimeStyle::zoneless;
    if (options_.quirks.future_record && i == count / 5) {
      m.modified = start + 3650 * kDay;
    }
    t.rows.push_back(Row{m, 0, generate_record(*def, m, options_.seed), changed_at});
  }
  std::vector<size_t> order(t.rows.size());
  std::iota(order.begin(), order.end(), 0);
  const bool disorder = options_.quirks.export_disorder;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const RecordMeta& x = t.rows[a].meta;
    const RecordMeta& y = t.rows[b].meta;
    const Ticks xa = t.rows[a].changed_at, ya = t.rows[b].changed_at;
    if (x.modified.has_value() != y.modified.has_value()) return !x.modified.has_value();
    if (disorder && xa != ya) return xa > ya;
    return std::tuple(xa, x.id) < std::tuple(ya, y.id);
  });
  for (size_t index : order) {
    t.rows[index].seq = t.next_seq++;
    t.feed[t.rows[index].seq] = index;
  }
  for (size_t i = 0; i < t.rows.size(); ++i) {
    t.by_id[t.rows[i].meta.id] = i;
    t.by_key[record_key(*def, t.rows[i].meta)] = i;
  }
  t.next_id = 1000 + 3LL * count + 1;
}

Quirks Dataset::quirks() const {
  std::lock_guard lock(mutex_);
  return options_.quirks;
}

void Dataset::set_quirks(const Quirks& quirks) {
  std::lock_guard lock(mutex_);
  options_.quirks = quirks;
}

std::string styled_timestamp(Ticks t, int fraction_digits, RecordMeta::TimeStyle style) {
  switch (style) {
    case RecordMeta::TimeStyle::utc: return format_timestamp(t, fraction_digits);
    case RecordMeta::TimeStyle::offset: {
      std::string s = format_timestamp(t + 2 * 3600 * kTicksPerSecond, fraction_digits);
      s.pop_back();  // the 'Z'
      return s + "+02:00";
    }
    case RecordMeta::TimeStyle::zoneless: {
      std::string s = format_timestamp(t, fraction_digits);
      s.pop_back();
      return s;
    }
  }
  return format_timestamp(t, fraction_digits);
}

Ticks Dataset::now_locked() const {
  Ticks t = options_.clock_start + clock_offset_;
  if (!options_.clock_frozen) t += now_ticks() - real_start_;
  return t;
}

Ticks Dataset::now() const {
  std::lock_guard lock(mutex_);
  return now_locked();
}

void Dataset::advance_clock(Ticks by) {
  std::lock_guard lock(mutex_);
  clock_offset_ += by;
}

bool Dataset::has_tenant(std::int64_t tenant) const {
  for (const TenantSetup& t : options_.tenants)
    if (t.id == tenant) return true;
  return false;
}

std::vector<std::int64_t> Dataset::tenants() const {
  std::vector<std::int64_t> out;
  for (const TenantSetup& t : options_.tenants) out.push_back(t.id);
  return out;
}

Dataset::Table* Dataset::table_locked(std::int64_t tenant, const std::string& resource) {
  auto it = tables_.find({tenant, resource});
  return it == tables_.end() ? nullptr : &it->second;
}
const Dataset::Table* Dataset::table_locked(std::int64_t tenant,
                                            const std::string& resource) const {
  auto it = tables_.find({tenant, resource});
  return it == tables_.end() ? nullptr : &it->second;
}

std::optional<ListResult> Dataset::list(std::int64_t tenant, const std::string& resource,
                                        const ListQuery& q) const {
  std::lock_guard lock(mutex_);
  const Table* t = table_locked(tenant, resource);
  if (t == nullptr) {
    // A known tenant and resource without rows: an empty list, as for a tenant that has none.
    if (!has_tenant(tenant) || find_resource(resource) == nullptr) return std::nullopt;
    return ListResult{};
  }
  std::vector<const Row*> matches;
  auto in_range = [](const std::optional<Ticks>& v, const std::optional<Ticks>& lo,
                     const std::optional<Ticks>& hi) {
    if (!lo && !hi) return true;
    if (!v) return false;  // a filter on a field the row lacks excludes the row
    return (!lo || *v >= *lo) && (!hi || *v < *hi);
  };
  // A server that rounds its filters (to whole seconds, say) returns rows outside the window.
  ListQuery rounded = q;
  if (const int r = options_.quirks.filter_rounding_seconds; r > 0) {
    const Ticks unit = r * kTicksPerSecond;
    for (std::optional<Ticks>* bound : {&rounded.modified_on_or_after, &rounded.modified_before,
                                        &rounded.created_on_or_after, &rounded.created_before})
      if (*bound) **bound -= (((**bound) % unit) + unit) % unit;
  }
  for (const Row& row : t->rows) {
    const RecordMeta& m = row.meta;
    const ListQuery& q = rounded;
    if (row.deleted) continue;
    if (q.parent && m.parent != *q.parent) continue;
    if (q.active == ListQuery::Active::only && !m.active) continue;
    if (q.active == ListQuery::Active::inactive_only && m.active) continue;
    if (!in_range(m.modified, q.modified_on_or_after, q.modified_before)) continue;
    if (!in_range(m.created, q.created_on_or_after, q.created_before)) continue;
    if (!q.ids.empty() && std::find(q.ids.begin(), q.ids.end(), record_key(*t->def, m)) == q.ids.end()) continue;
    matches.push_back(&row);
  }
  // Without a sort the order is the storage order (insertion), as a database heap would give:
  // clients must not rely on it.
  auto key_modified = [](const Row* r) { return r->meta.modified.value_or(r->meta.created); };
  using S = ListQuery::Sort;
  switch (q.sort) {
    case S::none:
      if (options_.quirks.unstable_list_order) {
        // No order at all: every call shuffles anew, so offset pages overlap and miss rows.
        Rng rng(mix_seed(options_.seed, ++list_calls_));
        for (size_t i = matches.size(); i > 1; --i) std::swap(matches[i - 1], matches[rng.below(i)]);
      }
      break;
    case S::id_asc:
      std::stable_sort(matches.begin(), matches.end(),
                       [](auto a, auto b) { return a->meta.id < b->meta.id; });
      break;
    case S::id_desc:
      std::stable_sort(matches.begin(), matches.end(),
                       [](auto a, auto b) { return a->meta.id > b->meta.id; });
      break;
    case S::modified_asc:
      std::stable_sort(matches.begin(), matches.end(),
                       [&](auto a, auto b) { return key_modified(a) < key_modified(b); });
      break;
    case S::modified_desc:
      std::stable_sort(matches.begin(), matches.end(),
                       [&](auto a, auto b) { return key_modified(a) > key_modified(b); });
      break;
    case S::created_asc:
      std::stable_sort(matches.begin(), matches.end(),
                       [](auto a, auto b) { return a->meta.created < b->meta.created; });
      break;
    case S::created_desc:
      std::stable_sort(matches.begin(), matches.end(),
                       [](auto a, auto b) { return a->meta.created > b->meta.created; });
      break;
  }
  ListResult result;
  result.total = static_cast<std::int64_t>(matches.size());
  const size_t begin = static_cast<size_t>(q.page - 1) * static_cast<size_t>(q.page_size);
  const size_t end = std::min(matches.size(), begin + static_cast<size_t>(q.page_size));
  for (size_t i = begin; i < end; ++i) append_rows(result.rows, *matches[i]);
  result.has_more = end < matches.size();
  return result;
}

std::optional<ExportResult> Dataset::export_page(std::int64_t tenant, const std::string& resource,
                                                 const ExportQuery& q) const {
  std::lock_guard lock(mutex_);
  const Table* t = table_locked(tenant, resource);
  if (t == nullptr) {
    if (!has_tenant(tenant) || find_resource(resource) == nullptr) return std::nullopt;
    ExportResult empty;
    empty.continue_seq = q.after_seq.value_or(0);
    return empty;
  }
  const Ticks visible_until = now_locked() - q.visibility_delay;
  auto it = q.after_seq ? t->feed.upper_bound(*q.after_seq) : t->feed.begin();
  // export_repeat_rows: a page from a token repeats rows the previous page already held (the
  // documented "may repeat rows"); at most half a batch, so every page still moves on.
  for (int back = std::min(options_.quirks.export_repeat_rows, q.batch_size / 2);
       q.after_seq && back > 0 && it != t->feed.begin(); --back)
    --it;
  ExportResult result;
  result.continue_seq = q.after_seq.value_or(0);
  std::optional<std::uint64_t> first_recent_seq;
  for (; it != t->feed.end(); ++it) {
    const Row& row = t->rows[it->second];
    const Ticks when = row.changed_at;
    // Rows changed within the visibility delay are not in the feed yet: the feed stops before
    // the first of them, so its token never passes a row the client has not seen.
    const bool recent = when > visible_until;
    if (recent && !q.include_recent) break;
    if ((q.from_date && !q.after_seq && (!row.meta.modified || *row.meta.modified < *q.from_date)) ||
        (q.hide_inactive && !row.meta.active) || row.deleted) {
      result.continue_seq = it->first;  // passed over, never to be returned from this token on
      continue;
    }
    if (result.rows.count >= q.batch_size) {
      result.has_more = true;
      break;
    }
    if (recent && !first_recent_seq) first_recent_seq = result.continue_seq;
    append_rows(result.rows, row);
    result.continue_seq = it->first;
  }
  // includeRecentChanges: a caught-up page hands back a token from before its recent rows, so
  // the next call repeats them (the documented "may repeat rows on consecutive calls").
  if (!result.has_more && first_recent_seq) result.continue_seq = *first_recent_seq;
  return result;
}

void Dataset::touch_locked(Table& t, size_t index) {
  Row& row = t.rows[index];
  t.feed.erase(row.seq);
  row.changed_at = now_locked();
  row.seq = t.next_seq++;
  t.feed[row.seq] = index;
  row.meta.version += 1;
  row.json = generate_record(*t.def, row.meta, options_.seed);
}

int Dataset::apply_changes(std::int64_t tenant, const std::string& resource, int n) {
  std::lock_guard lock(mutex_);
  Table* t = table_locked(tenant, resource);
  if (t == nullptr) return -1;
  const Ticks now = now_locked();
  for (int i = 0; i < n; ++i) {
    Rng& rng = t->churn_rng;
    const std::uint64_t kind = rng.below(100);
    const int digits = static_cast<int>(rng.below(8));
    if ((kind < 20 || t->rows.empty()) &&
        !(t->def->cat != nullptr && t->def->generate == nullptr && t->def->cat->response == "object")) {
      RecordMeta m;
      m.tenant = tenant;
      m.tenant_counts = &tenant_counts_[tenant];
      m.id = t->next_id;
      t->next_id += 3;
      m.created = truncate_to_digits(now, digits);
      m.modified = m.created;
      m.fraction_digits = digits;
      if (t->def->cat != nullptr && !t->def->cat->parent.empty()) {
        const Table* parents = table_locked(tenant, t->def->cat->parent);
        if (parents == nullptr || parents->rows.empty()) continue;
        m.parent = parents->rows[rng.below(parents->rows.size())].meta.id;
      }
      t->rows.push_back(Row{m, 0, {}});
      t->by_id[m.id] = t->rows.size() - 1;
      t->by_key[record_key(*t->def, m)] = t->rows.size() - 1;
      touch_locked(*t, t->rows.size() - 1);
      touch_parent_locked(*t, t->rows.back().meta);
      continue;
    }
    // Records without modifiedOn are append-only logs (or reference data read whole): they only
    // grow. Hard deletes are a separate call (delete_rows), so that a test knows which rows went.
    const CatalogueResource* cat = t->def->generate == nullptr ? t->def->cat : nullptr;
    const bool singleton = cat != nullptr && cat->response == "object";  // one row (per parent): updates only
    const bool only_grows = cat != nullptr && !cat->has_field("modifiedOn") && cat->parent.empty() && !singleton;
    if ((only_grows && kind >= 20) || (singleton && kind < 20)) {
      --i;  // draw again: this resource does not change that way
      continue;
    }
    const size_t index = rng.below(t->rows.size());
    RecordMeta& m = t->rows[index].meta;
    if (t->rows[index].deleted) continue;
    if (kind < 35) m.active = !m.active;  // deactivation (or, for an inactive row, reactivation)
    m.modified = truncate_to_digits(now, digits);
    m.fraction_digits = digits;
    touch_locked(*t, index);
    touch_parent_locked(*t, m);
  }
  return n;
}

std::optional<std::string> Dataset::truth(std::int64_t tenant, const std::string& resource) const {
  std::lock_guard lock(mutex_);
  const Table* t = table_locked(tenant, resource);
  if (t == nullptr) {
    if (!has_tenant(tenant) || find_resource(resource) == nullptr) return std::nullopt;
    return std::string("[]");
  }
  // Rows under a deleted parent went with it: the API answers 404 for that parent's listing.
  const Table* parents = t->def->cat != nullptr && !t->def->cat->parent.empty()
                             ? table_locked(tenant, t->def->cat->parent) : nullptr;
  auto parent_deleted = [&](const RecordMeta& m) {
    if (parents == nullptr) return false;
    const auto it = parents->by_id.find(m.parent);
    return it != parents->by_id.end() && parents->rows[it->second].deleted;
  };
  std::vector<const Row*> rows;
  for (const Row& r : t->rows)
    if (!r.deleted && !parent_deleted(r.meta)) rows.push_back(&r);
  std::sort(rows.begin(), rows.end(), [](auto a, auto b) { return a->meta.id < b->meta.id; });
  std::string out = "[";
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i) out += ',';
    out += rows[i]->json;
  }
  out += ']';
  return out;
}

void Dataset::touch_parent_locked(const Table& t, const RecordMeta& child) {
  // A change under a parent (a journal entry's lines, a customer's notes) changes the parent's
  // modifiedOn too: that is how a client finds which parents to read again.
  if (t.def->cat == nullptr || t.def->cat->parent.empty()) return;
  Table* parents = table_locked(child.tenant, t.def->cat->parent);
  if (parents == nullptr) return;
  auto it = parents->by_id.find(child.parent);
  if (it == parents->by_id.end()) return;
  RecordMeta& p = parents->rows[it->second].meta;
  p.modified = now_locked();
  p.fraction_digits = 7;
  touch_locked(*parents, it->second);
}

std::optional<std::int64_t> Dataset::row_by_key(std::int64_t tenant, const std::string& resource,
                                                const std::string& key) const {
  std::lock_guard lock(mutex_);
  const Table* t = table_locked(tenant, resource);
  if (t == nullptr) return std::nullopt;
  auto it = t->by_key.find(key);
  if (it == t->by_key.end() || t->rows[it->second].deleted) return std::nullopt;
  return t->rows[it->second].meta.id;
}

std::vector<std::string> Dataset::delete_rows(std::int64_t tenant, const std::string& resource, int n, bool restore) {
  std::lock_guard lock(mutex_);
  std::vector<std::string> keys;
  Table* t = table_locked(tenant, resource);
  if (t == nullptr || t->def->cat == nullptr) return keys;
  const Ticks now = now_locked();
  for (size_t i = 0; i < t->rows.size() && static_cast<int>(keys.size()) < n; i += 3) {
    Row& row = t->rows[i];
    if (row.deleted != restore) continue;
    row.deleted = !restore;
    row.changed_at = now;
    // A restored row comes back as it was (same modifiedOn): only a listing can notice it.
    touch_parent_locked(*t, row.meta);
    keys.push_back(record_key(*t->def, row.meta));
  }
  return keys;
}

}  // namespace stsync::sandbox
