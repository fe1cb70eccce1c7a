// Store: the default Visit, for stores that have nothing to hand out without a copy.
#include "storage/store.h"

namespace petracache::storage {

absl::StatusOr<LookupStatus> Store::Visit(std::string_view key, const ReadOptions& options,
                                          ItemVisitor fn) {
  ItemHeader header;
  std::string value;
  absl::StatusOr<LookupStatus> r = Get(key, options, &header, &value);
  if (r.ok() && *r == LookupStatus::kFound) fn(header, value);
  return r;
}

}  // namespace petracache::storage
