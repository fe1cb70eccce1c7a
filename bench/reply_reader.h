// ReplyReader: checks memcached text-protocol replies to the requests the load generator sends
// (get / multi-get and set), resumably, item by item, straight from the receive buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "key_distribution.h"

namespace petracache::bench {

enum class RequestKind : uint8_t { kGet, kSet };

// The reply a connection is waiting for (the oldest request in flight), and how far into it
// the reader got. keys/key_count: the ids a get asked for, in request order.
struct PendingReply {
  RequestKind kind = RequestKind::kGet;
  const uint64_t* keys = nullptr;
  uint32_t key_count = 0;
  uint32_t next_key = 0;  // keys before this one were answered or skipped (missed)
  uint32_t hits = 0;
};

enum class ReadStatus {
  kNeedMore,   // the reply is incomplete; `consumed` bytes (whole items) were used
  kDone,       // the reply is complete (END / STORED consumed); hits in PendingReply
  kErrorLine,  // an unexpected single line (e.g. SERVER_ERROR) answered the whole request;
               // it was consumed and the stream is still in sync
  kDesync,     // the bytes are not a reply to this request: the stream cannot be trusted
};

// Reads from the front of `input` as much of `reply` as is complete and reports the bytes
// used in *consumed. Keys a get skipped (misses) are appended to *missed when it is not null.
// A VALUE must name the next asked-for key or a later one (memcached answers in request
// order and leaves misses out), carry a decimal byte count, and end its data with \r\n.
ReadStatus ReadReply(std::string_view input, const KeyFormat& format, PendingReply* reply,
                     size_t* consumed, std::vector<uint64_t>* missed);

}  // namespace petracache::bench
