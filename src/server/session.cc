// Session: the per-connection request loop; disk-bound requests are re-parsed from an owned
// copy on a blocking thread, because the input buffer may move while they wait.
#include "server/session.h"

#include <algorithm>

#include "protocol/encoder.h"

namespace petracache::server {
namespace {

SessionAction ActionFor(engine::Outcome outcome) {
  switch (outcome) {
    case engine::Outcome::kClose:
      return SessionAction::kClose;
    case engine::Outcome::kShutdown:
      return SessionAction::kShutdown;
    case engine::Outcome::kDone:
    case engine::Outcome::kWouldBlock:
    case engine::Outcome::kPartial:
      break;
  }
  return SessionAction::kContinue;
}

}  // namespace

bool Session::Writes(CommandType type) {
  switch (type) {
    case CommandType::kSet:
    case CommandType::kAdd:
    case CommandType::kReplace:
    case CommandType::kAppend:
    case CommandType::kPrepend:
    case CommandType::kCas:
    case CommandType::kLeaseSet:
    case CommandType::kDelete:
    case CommandType::kIncr:
    case CommandType::kDecr:
    case CommandType::kTouch:
      return true;
    default:
      return false;
  }
}

bool Session::UsesStore(CommandType type) {
  switch (type) {
    case CommandType::kGet:
    case CommandType::kGets:
    case CommandType::kGat:
    case CommandType::kGats:
    case CommandType::kFlushAll:
      return true;
    default:
      return Writes(type);
  }
}

bool Session::AcknowledgesWrite(const Command& command) {
  // gat/gats are answered with the values, which stay true whether or not the touch
  // survives; flush_all persists its own state synchronously.
  return command.error == ProtocolError::kNone && !command.noreply && Writes(command.type);
}

SessionResult Session::Process(std::string_view input, std::string* out) {
  // Behind held replies, new ones are held too.
  std::string* dest = holding_ ? &held_ : out;
  const size_t start = dest->size();
  acks_.clear();
  bool used_store = false;
  SessionResult result{0, SessionAction::kContinue};
  size_t pos = 0;
  while (true) {
    if (dest->size() >= options_.max_output) {
      result = {pos, SessionAction::kContinue};
      break;
    }
    protocol::ParseResult r = parser_.Parse(input.substr(pos), &command_);
    if (r.status == protocol::ParseStatus::kNeedMore) {
      result = {pos + r.consumed, SessionAction::kContinue};
      break;
    }
    if (r.status == protocol::ParseStatus::kClose) {
      result = {input.size(), SessionAction::kClose};
      break;
    }
    engine::ExecContext ctx{dest, stats_, /*allow_disk=*/false};
    ctx.first_key = resume_key_;
    ctx.output_limit = options_.max_output;
    const size_t before = dest->size();
    const engine::Outcome outcome = engine_->Execute(command_, ctx);
    if (command_.error == ProtocolError::kNone && UsesStore(command_.type)) used_store = true;
    if (outcome == engine::Outcome::kPartial) {
      // Leave the request in the input; the next call re-parses it and goes on from here.
      resume_key_ = ctx.next_key;
      result = {pos + r.skipped, SessionAction::kContinue};
      break;
    }
    if (outcome == engine::Outcome::kWouldBlock) {
      // The request only: not the tail of a swallowed data block parsed before it.
      disk_request_.assign(input.substr(pos + r.skipped, r.consumed - r.skipped));
      disk_first_key_ = resume_key_;
      resume_key_ = 0;
      result = {pos + r.consumed, SessionAction::kNeedDisk};
      break;
    }
    if (AcknowledgesWrite(command_) && dest->size() > before) {
      acks_.emplace_back(before, dest->size());
    }
    resume_key_ = 0;
    pos += r.consumed;
    const SessionAction action = ActionFor(outcome);
    if (action != SessionAction::kContinue) {
      result = {pos, action};
      break;
    }
  }

  if (holding_) {
    held_acks_.insert(held_acks_.end(), acks_.begin(), acks_.end());
    if (used_store) held_mark_ = std::max(held_mark_, engine_->store()->CommitMark());
  } else if (used_store && dest->size() > start) {
    storage::Store* store = engine_->store();
    const uint64_t mark = store->CommitMark();
    if (!store->Committed(mark)) Hold(out, start, mark);
  }
  return result;
}

void Session::Hold(std::string* out, size_t start, uint64_t mark) {
  held_.assign(*out, start);
  out->resize(start);
  for (const auto& [begin, end] : acks_) held_acks_.emplace_back(begin - start, end - start);
  holding_ = true;
  held_mark_ = mark;
}

void Session::ReleaseHeld(const absl::Status& commit, std::string* out) {
  if (commit.ok()) {
    if (out->empty()) {
      out->swap(held_);
    } else {
      out->append(held_);
    }
  } else {
    size_t pos = 0;
    for (const auto& [begin, end] : held_acks_) {
      out->append(held_, pos, begin - pos);
      protocol::AppendError(out, ProtocolError::kStorageFailure);
      stats_->storage_errors.Add();
      pos = end;
    }
    out->append(held_, pos);
  }
  held_.clear();
  held_acks_.clear();
  holding_ = false;
  held_mark_ = 0;
}

void Session::AppendReply(std::string_view reply, std::string* out) {
  (holding_ ? held_ : *out).append(reply);
}

SessionAction Session::RunBlocking(engine::Engine* engine, engine::EngineStats* stats,
                                   const protocol::ParserOptions& parser_options,
                                   std::string_view request, size_t first_key, std::string* out,
                                   size_t output_limit, size_t* next_key) {
  if (next_key != nullptr) *next_key = 0;
  protocol::Parser parser(parser_options);
  Command command;
  protocol::ParseResult r = parser.Parse(request, &command);
  if (r.status != protocol::ParseStatus::kCommand) return SessionAction::kClose;
  engine::ExecContext ctx{out, stats, /*allow_disk=*/true};
  ctx.first_key = first_key;
  ctx.output_limit = output_limit;
  const size_t start = out->size();
  const engine::Outcome outcome = engine->Execute(command, ctx);
  if (outcome == engine::Outcome::kPartial && next_key != nullptr) *next_key = ctx.next_key;
  const SessionAction action = ActionFor(outcome);
  if (UsesStore(command.type)) {
    // This thread may wait: commit here rather than hold the reply.
    storage::Store* store = engine->store();
    absl::Status commit = store->Commit(store->CommitMark());
    if (!commit.ok() && AcknowledgesWrite(command) && out->size() > start) {
      out->resize(start);
      protocol::AppendError(out, ProtocolError::kStorageFailure);
      stats->storage_errors.Add();
    }
  }
  return action;
}

}  // namespace petracache::server
