// Session: the per-connection request loop; disk-bound requests are re-parsed from an owned
// copy on a blocking thread, because the input buffer may move while they wait.
#include "server/session.h"

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

bool Session::IsMutation(CommandType type) {
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
    case CommandType::kGat:
    case CommandType::kGats:
    case CommandType::kFlushAll:
      return true;
    default:
      return false;
  }
}

SessionResult Session::Process(std::string_view input, std::string* out) {
  size_t pos = 0;
  while (out->size() < options_.max_output) {
    protocol::ParseResult r = parser_.Parse(input.substr(pos), &command_);
    if (r.status == protocol::ParseStatus::kNeedMore)
      return {pos + r.consumed, SessionAction::kContinue};
    if (r.status == protocol::ParseStatus::kClose) return {input.size(), SessionAction::kClose};

    const bool offload = options_.offload_writes && command_.error == ProtocolError::kNone &&
                         IsMutation(command_.type);
    engine::Outcome outcome = engine::Outcome::kWouldBlock;
    engine::ExecContext ctx{out, stats_, /*allow_disk=*/false};
    ctx.first_key = resume_key_;
    ctx.output_limit = options_.max_output;
    if (!offload) outcome = engine_->Execute(command_, ctx);
    if (outcome == engine::Outcome::kPartial) {
      // Leave the request in the input; the next call re-parses it and goes on from here.
      resume_key_ = ctx.next_key;
      return {pos + r.skipped, SessionAction::kContinue};
    }
    if (outcome == engine::Outcome::kWouldBlock) {
      // The request only: not the tail of a swallowed data block parsed before it.
      disk_request_.assign(input.substr(pos + r.skipped, r.consumed - r.skipped));
      disk_first_key_ = resume_key_;
      resume_key_ = 0;
      return {pos + r.consumed, SessionAction::kNeedDisk};
    }
    resume_key_ = 0;
    pos += r.consumed;
    SessionAction action = ActionFor(outcome);
    if (action != SessionAction::kContinue) return {pos, action};
  }
  return {pos, SessionAction::kContinue};
}

SessionAction Session::RunBlocking(engine::Engine* engine, engine::EngineStats* stats,
                                   const protocol::ParserOptions& parser_options,
                                   std::string_view request, size_t first_key, std::string* out) {
  protocol::Parser parser(parser_options);
  Command command;
  protocol::ParseResult r = parser.Parse(request, &command);
  if (r.status != protocol::ParseStatus::kCommand) return SessionAction::kClose;
  engine::ExecContext ctx{out, stats, /*allow_disk=*/true};
  ctx.first_key = first_key;
  return ActionFor(engine->Execute(command, ctx));
}

}  // namespace petracache::server
