// ServiceTitan's published contract for every operation (src/sandbox/contract.json, extracted
// from the official OpenAPI specs by jobs/contract.py): the query parameters an operation takes,
// which are required, their types, enums and maxima. The sandbox refuses a request that breaks
// it with the API's own 400, so that a job the real API would refuse fails here too.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stsync::sandbox {

struct ContractParam {
  std::string name, type, format, items;  // type: integer, boolean, string, number, array
  bool required = false;
  std::vector<std::string> enums;
  std::optional<std::int64_t> maximum;
};

struct ContractOperation {
  std::string method, path;  // "GET", "crm/v2/tenant/{tenant}/customers"
  std::vector<ContractParam> params;
  // A filter combination the operation's text requires ("Either CustomerIds, modifiedOn or
  // modifiedOnOrAfter parameter must be specified"): at least one of the names, any case.
  std::vector<std::string> one_of;
  std::string one_of_message;
};

/// A broken rule: the parameter it names and the API's message.
struct ContractViolation {
  std::string field, message;
};

class Contract {
 public:
  /// The contract compiled into the sandbox.
  static const Contract& builtin();
  explicit Contract(std::string_view json);
  /// The operation `method` `path` (no leading slash) falls under, or null when the specs have none.
  const ContractOperation* find(std::string_view method, std::string_view path) const;
  /// The first rule the query breaks: a required parameter missing, a value of the wrong type,
  /// not in its enum, or above its maximum. `values(name)` gives every value sent for a name.
  static std::optional<ContractViolation> check(
      const ContractOperation& op, const std::multimap<std::string, std::string>& query);
  /// The query's parameter names the operation does not declare (compared as ASP.NET binds them:
  /// ignoring case). The real API ignores them, so a misspelt filter silently filters nothing.
  static std::vector<std::string> undeclared(const ContractOperation& op,
                                             const std::multimap<std::string, std::string>& query);
  size_t size() const { return operations_.size(); }

 private:
  std::vector<ContractOperation> operations_;
};

}  // namespace stsync::sandbox
