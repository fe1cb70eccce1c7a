// Parser: a streaming, pure parser for the memcached text protocol. It reads requests from the
// front of a byte buffer, does no I/O, and fills a reusable Command whose keys and data are
// views into that buffer.
#pragma once

#include <cstddef>
#include <string_view>

#include "petracache/command.h"

namespace petracache::protocol {

struct ParserOptions {
  // The item size limit (memcached's -I): a storage command whose item would be larger is
  // answered with SERVER_ERROR object too large for cache and its data block is swallowed.
  size_t item_size_max = kDefaultItemSizeMax;
  // memcached lets a get/gets line grow without bound; we close the connection past this.
  size_t max_get_line = 4 * 1024 * 1024;
};

enum class ParseStatus {
  kCommand,   // *cmd holds a request; execute it, then drop `consumed` bytes
  kNeedMore,  // drop `consumed` bytes (swallowed data, possibly 0) and wait for more input
  kClose,     // the connection must be closed (line too long, HTTP request)
};

struct ParseResult {
  ParseStatus status;
  size_t consumed;
  // Of `consumed`, the leading bytes that were the rest of a swallowed (too large) data block;
  // the request itself is the remaining consumed - skipped bytes.
  size_t skipped = 0;
};

struct Tokens;

class Parser {
 public:
  explicit Parser(const ParserOptions& options = {}) : options_(options) {}

  // Parses the next request at the front of `input`. Errors memcached reports in-band come
  // back as kCommand with cmd->error set; the stream stays in sync exactly as memcached's does.
  ParseResult Parse(std::string_view input, Command* cmd);

  // Bytes of a rejected data block still to be discarded.
  size_t swallowing() const { return swallow_; }

 private:
  ParseResult ParseLine(std::string_view input, size_t line_end, size_t next, Command* cmd);
  // mn, mg, ms, md, ma, me; t is the tokenized request line.
  ParseResult ParseMeta(CommandType type, const Tokens& t, std::string_view input, size_t next,
                        Command* cmd);
  // A storage command's data block of value_length bytes plus "\r\n", starting at next.
  ParseResult ReadDataBlock(std::string_view input, size_t next, size_t value_length, Command* cmd);

  ParserOptions options_;
  size_t swallow_ = 0;
};

}  // namespace petracache::protocol
