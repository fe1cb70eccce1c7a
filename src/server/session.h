// Session: one client connection's protocol state, the joint between the byte stream and the
// engine (bytes in -> parse -> execute -> reply bytes out). It knows nothing of sockets: the
// server's connection handler feeds it input and sends what it appends to the output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "petracache/command.h"
#include "protocol/parser.h"

namespace petracache::server {

struct SessionOptions {
  protocol::ParserOptions parser;
  // Stop producing replies once this much output is waiting (back-pressure): the rest of the
  // input is processed after the client has read some.
  size_t max_output = 4 * 1024 * 1024;
};

enum class SessionAction {
  kContinue,  // all complete requests handled (or output is full); wait for more input
  kNeedDisk,  // the request in disk_request() (already counted in `consumed`) needs disk:
              // run it with RunBlocking on a pool thread and send its reply before any
              // reply to later input; until then feed no input
  kClose,     // close after sending the output
  kShutdown,  // the client asked the server to shut down; close after sending the output
};

struct SessionResult {
  size_t consumed;  // input bytes to drop (including a request handed over with kNeedDisk)
  SessionAction action;
};

class Session {
 public:
  Session(engine::Engine* engine, engine::EngineStats* stats, const SessionOptions& options)
      : engine_(engine), stats_(stats), options_(options), parser_(options.parser) {}

  // Handles the complete requests at the front of `input`, appending replies to *out, never
  // touching disk.
  //
  // Group commit (Store::CommitMark): replies that acknowledge writes, or show what was
  // written, must not leave before those writes are committed. When the store has not
  // committed them yet, this call's replies are held in the session instead of *out (and so
  // are those of later calls, to keep the order) until ReleaseHeld().
  SessionResult Process(std::string_view input, std::string* out);

  // Replies are held, waiting for the store to commit up to held_mark().
  bool holding() const { return holding_; }
  uint64_t held_mark() const { return held_mark_; }
  size_t held_bytes() const { return held_.size(); }
  // Appends the held replies to *out. If the commit failed (`commit` not OK), every held
  // write acknowledgement becomes memcached's SERVER_ERROR instead: the write may or may not
  // survive, so it must not be reported as done.
  void ReleaseHeld(const absl::Status& commit, std::string* out);
  // Appends a reply produced elsewhere (a disk request's) behind any held ones.
  void AppendReply(std::string_view reply, std::string* out);

  // The one request waiting for disk (an owned copy of its bytes), after kNeedDisk, and for
  // a multi-get answered in part already, the key to continue from.
  const std::string& disk_request() const { return disk_request_; }
  size_t disk_first_key() const { return disk_first_key_; }

  // Runs a request that needed disk, on a blocking thread; returns its reply and what to do.
  // Commits its writes before returning (a failed commit turns a write acknowledgement into
  // SERVER_ERROR). A retrieval stops once *out reaches output_limit with keys left: then
  // *next_key is the key to go on from (run it again with first_key = *next_key once the
  // client has read some), else 0. Thread-safe with respect to other sessions; uses the
  // caller's stats block.
  static SessionAction RunBlocking(engine::Engine* engine, engine::EngineStats* stats,
                                   const protocol::ParserOptions& parser_options,
                                   std::string_view request, size_t first_key, std::string* out,
                                   size_t output_limit = SIZE_MAX, size_t* next_key = nullptr);

 private:
  // Whether the command is one that writes an item (storage commands, delete, incr/decr,
  // touch).
  static bool Writes(CommandType type);
  // Whether the command reads or writes the store (its reply may depend on a commit).
  static bool UsesStore(CommandType type);
  // Whether a successful reply says a write happened (a commit failure must retract it).
  static bool AcknowledgesWrite(const Command& command);
  // Moves replies from (*out)[start, end) into held_ (ack spans relative to `start`).
  void Hold(std::string* out, size_t start, uint64_t mark);

  engine::Engine* const engine_;
  engine::EngineStats* const stats_;
  const SessionOptions options_;
  protocol::Parser parser_;
  Command command_;  // reused across requests so its key vector keeps its capacity
  std::string disk_request_;
  size_t disk_first_key_ = 0;
  // A multi-get whose reply is being produced in output-sized pieces: its request stays at
  // the front of the input (so the loop calls again once the output drains) and resumes here.
  size_t resume_key_ = 0;

  // Replies waiting for a commit, and the [begin, end) spans in held_ that acknowledge
  // writes.
  bool holding_ = false;
  uint64_t held_mark_ = 0;
  std::string held_;
  std::vector<std::pair<size_t, size_t>> held_acks_;
  // Write acknowledgements of the current Process call, offsets into its output buffer.
  std::vector<std::pair<size_t, size_t>> acks_;
};

}  // namespace petracache::server
