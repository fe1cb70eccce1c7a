// Tests for protocol/parser. Every case is replayed with the input split at every fragment size
// (1, 2, 3, 5, 7, 10, 100 bytes and whole), the way bytes really arrive on a socket.
#include "protocol/parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "protocol/encoder.h"

namespace petracache::protocol {
namespace {

std::string TypeName(CommandType t) {
  switch (t) {
    case CommandType::kInvalid:
      return "invalid";
    case CommandType::kGet:
      return "get";
    case CommandType::kGets:
      return "gets";
    case CommandType::kGat:
      return "gat";
    case CommandType::kGats:
      return "gats";
    case CommandType::kSet:
      return "set";
    case CommandType::kAdd:
      return "add";
    case CommandType::kReplace:
      return "replace";
    case CommandType::kAppend:
      return "append";
    case CommandType::kPrepend:
      return "prepend";
    case CommandType::kCas:
      return "cas";
    case CommandType::kDelete:
      return "delete";
    case CommandType::kIncr:
      return "incr";
    case CommandType::kDecr:
      return "decr";
    case CommandType::kTouch:
      return "touch";
    case CommandType::kFlushAll:
      return "flush_all";
    case CommandType::kVersion:
      return "version";
    case CommandType::kVerbosity:
      return "verbosity";
    case CommandType::kQuit:
      return "quit";
    case CommandType::kShutdown:
      return "shutdown";
    case CommandType::kStats:
      return "stats";
    case CommandType::kLeaseGet:
      return "lease-get";
    case CommandType::kLeaseSet:
      return "lease-set";
    case CommandType::kMetaGet:
      return "metaget";
    case CommandType::kMetaNoop:
      return "mn";
    case CommandType::kMetaRetrieve:
      return "mg";
    case CommandType::kMetaStore:
      return "ms";
    case CommandType::kMetaDelete:
      return "md";
    case CommandType::kMetaArithmetic:
      return "ma";
    case CommandType::kMetaDebug:
      return "me";
  }
  return "?";
}

// A compact, comparable description of a parsed command.
std::string Describe(const Command& c) {
  std::string s = TypeName(c.type);
  if (c.error != ProtocolError::kNone) absl::StrAppend(&s, " !", std::string(ErrorText(c.error)));
  if (c.noreply) absl::StrAppend(&s, " noreply");
  if (!c.key.empty()) absl::StrAppend(&s, " key=", std::string(c.key));
  if (!c.keys.empty()) {
    std::vector<std::string> keys(c.keys.begin(), c.keys.end());
    absl::StrAppend(&s, " keys=", absl::StrJoin(keys, ","));
  }
  if (c.flags) absl::StrAppend(&s, " flags=", c.flags);
  if (c.exptime || c.has_exptime) absl::StrAppend(&s, " exp=", c.exptime);
  if (c.cas_unique) absl::StrAppend(&s, " cas=", c.cas_unique);
  if (c.delta) absl::StrAppend(&s, " delta=", c.delta);
  if (c.verbosity) absl::StrAppend(&s, " v=", c.verbosity);
  if (!c.data.empty()) absl::StrAppend(&s, " data=", std::string(c.data));
  if (!c.arg.empty()) absl::StrAppend(&s, " arg=", std::string(c.arg));
  const MetaFlags& m = c.meta;
  if (m.count > 0) {
    std::vector<std::string> tokens(m.tokens.begin(), m.tokens.begin() + m.count);
    absl::StrAppend(&s, " meta=", absl::StrJoin(tokens, ","));
  }
  if (m.quiet) absl::StrAppend(&s, " q");
  if (m.base64_key) absl::StrAppend(&s, " b64");
  if (m.new_ttl) absl::StrAppend(&s, " T=", m.ttl);
  if (m.vivify) absl::StrAppend(&s, " N=", m.vivify_ttl);
  if (m.has_cas) absl::StrAppend(&s, " C=", m.cas);
  if (m.mode) absl::StrAppend(&s, " M=", std::string(1, m.mode));
  if (m.client_flags) absl::StrAppend(&s, " F=", m.client_flags);
  if (m.delta != 1) absl::StrAppend(&s, " D=", m.delta);
  if (m.initial) absl::StrAppend(&s, " J=", m.initial);
  return s;
}

// Feeds `input` in fragments of `step` bytes and returns what the parser produced, "CLOSE"
// for a close, and "PENDING" if bytes were left unconsumed at the end.
std::vector<std::string> Replay(std::string_view input, size_t step,
                                const ParserOptions& options = {}) {
  Parser parser(options);
  Command cmd;
  std::string buffer;
  std::vector<std::string> out;
  size_t fed = 0;
  while (fed < input.size()) {
    size_t n = std::min(step, input.size() - fed);
    buffer.append(input.substr(fed, n));
    fed += n;
    for (;;) {
      ParseResult r = parser.Parse(buffer, &cmd);
      if (r.status == ParseStatus::kClose) {
        out.push_back("CLOSE");
        return out;
      }
      if (r.status == ParseStatus::kCommand) out.push_back(Describe(cmd));
      buffer.erase(0, r.consumed);
      if (r.status == ParseStatus::kNeedMore) break;
    }
  }
  if (!buffer.empty() || parser.swallowing() > 0) out.push_back("PENDING");
  return out;
}

void ExpectParses(std::string_view input, const std::vector<std::string>& want,
                  const ParserOptions& options = {}) {
  for (size_t step : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{7}, size_t{10},
                      size_t{100}, input.size()}) {
    if (step == 0) continue;
    EXPECT_EQ(Replay(input, step, options), want) << "fragment size " << step;
  }
}

TEST(ParserTest, RetrievalCommands) {
  ExpectParses("get a\r\ngets a b c\r\ngat 10 x y\r\ngats -1 z\r\n",
               {"get keys=a", "gets keys=a,b,c", "gat keys=x,y exp=10", "gats keys=z exp=-1"});
}

TEST(ParserTest, GetTakesEveryKeyBeyondTheTokenLimit) {
  std::string line = "get";
  std::vector<std::string> keys;
  for (int i = 0; i < 60; ++i) {
    keys.push_back(absl::StrCat("k", i));
    absl::StrAppend(&line, "  ", keys.back());
  }
  ExpectParses(line + "\r\n", {"get keys=" + absl::StrJoin(keys, ",")});
}

TEST(ParserTest, OverLongKeyInGetStopsThereWithAnError) {
  std::string k250(250, 'k');
  std::string k251(251, 'k');
  ExpectParses("get a " + k250 + " " + k251 + " b\r\n",
               {"get !CLIENT_ERROR bad command line format keys=a," + k250});
}

TEST(ParserTest, GatWithBadExptime) {
  ExpectParses("gat abc k\r\ngat 10\r\n",
               {"gat !CLIENT_ERROR invalid exptime argument", "gat exp=10"});
}

TEST(ParserTest, StorageCommandsWithDataBlocks) {
  ExpectParses(
      "set k 5 100 3\r\nabc\r\nadd k 0 0 0\r\n\r\nreplace k 0 0 2 noreply\r\nxy\r\n"
      "append k 0 0 1\r\nz\r\nprepend k 0 0 1\r\nw\r\ncas k 1 2 3 99\r\nabc\r\n",
      {"set key=k flags=5 exp=100 data=abc", "add key=k", "replace noreply key=k data=xy",
       "append key=k data=z", "prepend key=k data=w", "cas key=k flags=1 exp=2 cas=99 data=abc"});
}

TEST(ParserTest, DataBlockMayContainAnyByte) {
  std::string value("a\r\nb\0c\n", 7);
  ExpectParses("set k 0 0 7\r\n" + value + "\r\nget k\r\n",
               {"set key=k data=" + value, "get keys=k"});
}

TEST(ParserTest, BadDataChunkConsumesExactlyTheDeclaredLength) {
  // memcached reads 1+2 bytes ("abc"), rejects them, then parses "\r\n" as an empty line.
  ExpectParses("set k 0 0 1\r\nabc\r\n",
               {"set !CLIENT_ERROR bad data chunk key=k", "invalid !ERROR"});
  ExpectParses("set k 0 0 1\nx\nget k\n",
               {"set !CLIENT_ERROR bad data chunk key=k", "invalid !ERROR"});
}

TEST(ParserTest, MalformedStorageLineLetsTheDataRunAsACommand) {
  ExpectParses("set k abc 0 1\r\nx\r\n",
               {"set !CLIENT_ERROR bad command line format key=k", "invalid !ERROR"});
  ExpectParses("set k 0 0 -1\r\n", {"set !CLIENT_ERROR bad command line format key=k"});
  ExpectParses("set k -1 0 1\r\nx\r\n",
               {"set !CLIENT_ERROR bad command line format key=k", "invalid !ERROR"});
  ExpectParses("set " + std::string(251, 'k') + " 0 0 1\r\nx\r\n",
               {"set !CLIENT_ERROR bad command line format", "invalid !ERROR"});
  ExpectParses("cas k 0 0 1\r\nx\r\n", {"invalid !ERROR", "invalid !ERROR"});
  ExpectParses("cas k 0 0 1 abc\r\nx\r\n",
               {"cas !CLIENT_ERROR bad command line format key=k", "invalid !ERROR"});
}

TEST(ParserTest, TooLargeValueIsSwallowed) {
  ParserOptions options;
  options.item_size_max = 100;
  // 48 + 8 + 2 + 2 + 40 = 100 fits; 41 does not.
  std::string fits(40, 'x');
  std::string big(41, 'y');
  ExpectParses("set k 0 0 40\r\n" + fits + "\r\nset k 0 0 41 noreply\r\n" + big + "\r\nget k\r\n",
               {"set key=k data=" + fits,
                "set !SERVER_ERROR object too large for cache noreply key=k", "get keys=k"},
               options);
  // Flags count against the limit too (4 more bytes).
  ExpectParses("set k 1 0 38\r\n" + std::string(38, 'z') + "\r\n",
               {"set !SERVER_ERROR object too large for cache key=k flags=1"}, options);
}

TEST(ParserTest, IncompleteInputWaits) {
  EXPECT_EQ(Replay("set k 0 0 5\r\nab", 100), std::vector<std::string>{"PENDING"});
  EXPECT_EQ(Replay("get k", 100), std::vector<std::string>{"PENDING"});
}

TEST(ParserTest, NumbersAndNoreply) {
  ExpectParses(
      "incr k 5\r\ndecr k 18446744073709551615 noreply\r\nincr k -1\r\nincr k\r\n"
      "touch k 10\r\ntouch k abc noreply\r\n",
      {"incr key=k delta=5", "decr noreply key=k delta=18446744073709551615",
       "incr !CLIENT_ERROR invalid numeric delta argument key=k", "invalid !ERROR",
       "touch key=k exp=10", "touch !CLIENT_ERROR invalid exptime argument noreply key=k"});
}

TEST(ParserTest, DeleteForms) {
  ExpectParses(
      "delete k\r\ndelete k 0\r\ndelete k noreply\r\ndelete k 0 noreply\r\ndelete k 10\r\n"
      "delete k x\r\ndelete k 0 x\r\ndelete\r\n",
      {"delete key=k", "delete key=k", "delete noreply key=k", "delete noreply key=k",
       "delete key=k",
       "delete !CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
       "delete !CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
       "invalid !ERROR"});
}

TEST(ParserTest, FlushAllForms) {
  ExpectParses(
      "flush_all\r\nflush_all 10\r\nflush_all noreply\r\nflush_all -1 noreply\r\n"
      "flush_all abc\r\nflush_all 1 2 3\r\n",
      {"flush_all", "flush_all exp=10", "flush_all noreply", "flush_all noreply exp=-1",
       "flush_all !CLIENT_ERROR invalid exptime argument", "invalid !ERROR"});
}

TEST(ParserTest, ServerCommands) {
  ExpectParses(
      "version\r\nquit\r\nstats\r\nstats settings\r\nshutdown\r\nshutdown graceful\r\n"
      "shutdown a b\r\nverbosity 1\r\nverbosity\r\nverbosity abc\r\nverbosity noreply\r\n"
      "verbosity 1 2\r\nverbosity 1 2 3\r\n",
      {"version", "quit", "stats", "stats arg=settings", "shutdown", "shutdown arg=graceful",
       "shutdown arg=a b", "verbosity v=1", "invalid !ERROR",
       "verbosity !CLIENT_ERROR bad command line format",
       "verbosity !CLIENT_ERROR bad command line format noreply", "verbosity v=1",
       "invalid !ERROR"});
}

TEST(ParserTest, UnknownAndMalformedLines) {
  ExpectParses("GET k\r\n\r\nx\r\nget\r\nfoo bar\r\nmx\r\n",
               {"invalid !ERROR", "invalid !ERROR", "invalid !ERROR", "invalid !ERROR",
                "invalid !ERROR", "invalid !ERROR"});
}

TEST(ParserTest, MetaCommands) {
  ExpectParses(
      "mn\r\nmn extra\r\nmg k\r\nmg k v t O12 q\r\nms k 2 T30 F5 ME q\r\nhi\r\n"
      "md k I T-1 C9\r\nma k MD D7 N0 J3\r\nme k\r\nme YWJj b\r\nmg YWJj b k\r\n",
      {"mn", "mn", "mg key=k", "mg key=k meta=v,t,O12,q q",
       "ms key=k data=hi meta=T30,F5,ME,q q T=30 M=E F=5", "md key=k meta=I,T-1,C9 T=-1 C=9",
       "ma key=k meta=MD,D7,N0,J3 N=0 M=D D=7 J=3", "me key=k", "me key=abc b64",
       "mg key=abc meta=b,k b64"});
}

TEST(ParserTest, MetaErrorsKeepTheStreamInSync) {
  // mg: every preparse message as memcached gives it; the first unknown or repeated flag wins.
  ExpectParses(
      "mg\r\nmg k zz\r\nmg k v v\r\nmg k T\r\nmg k Fx\r\nmg k MXX\r\n"
      "mg k Jx\r\nmg k Dx\r\nmg k h\r\nmg k b\r\nmg k b zz\r\n",
      {"mg !ERROR", "mg !CLIENT_ERROR invalid flag key=k meta=zz",
       "mg !CLIENT_ERROR duplicate flag key=k meta=v",
       "mg !CLIENT_ERROR bad token in command line format key=k meta=T",
       "mg !CLIENT_ERROR bad command line format key=k meta=Fx",
       "mg !CLIENT_ERROR incorrect length for M token key=k meta=MXX",
       "mg !CLIENT_ERROR invalid numeric initial value key=k meta=Jx",
       "mg !CLIENT_ERROR invalid numeric delta value key=k meta=Dx D=0",
       "mg !CLIENT_ERROR invalid flag key=k meta=h",
       "mg !CLIENT_ERROR error decoding key meta=b b64",
       "mg !CLIENT_ERROR invalid flag meta=b,zz b64"});
  // md and ma: one message for every preparse failure.
  ExpectParses("md k zz\r\nma k Dx\r\nma k MX\r\nmd k O123456789012345678901234567890123\r\n",
               {"md !CLIENT_ERROR invalid or duplicate flag key=k meta=zz",
                "ma !CLIENT_ERROR invalid or duplicate flag key=k meta=Dx D=0",
                "ma !CLIENT_ERROR invalid mode for ma M token key=k meta=MX M=X",
                "md !CLIENT_ERROR opaque token too long key=k "
                "meta=O123456789012345678901234567890123"});
  // ms: errors found once the length is known swallow the data block; a bad length does not.
  ExpectParses("ms k\r\nms k 2 zz\r\nhi\r\nms k 2 MX\r\nhi\r\nms k -1\r\nms k 2\r\nhiX\r\nmn\r\n",
               {"ms !CLIENT_ERROR bad command line format key=k",
                "ms !CLIENT_ERROR invalid flag key=k meta=zz",
                "ms !CLIENT_ERROR invalid mode for ms M token key=k meta=MX M=X",
                "ms !CLIENT_ERROR bad command line format key=k",
                "ms !CLIENT_ERROR bad data chunk key=k", "invalid !ERROR", "mn"});
  // Too many flags: 18 after mg's key, 17 after ms's length (memcached counts 20 tokens with
  // its terminal one).
  ExpectParses(
      "mg k a b c d e f g h i j k l m n o p q r\r\n"
      "ms k 1 a b c d e f g h i j k l m n o p q\r\n",
      {"mg !CLIENT_ERROR options flags are too long key=k",
       "ms !CLIENT_ERROR options flags too long key=k"});
}

TEST(ParserTest, MetaSetTooLargeSwallowsTheBlock) {
  ParserOptions options;
  options.item_size_max = 100;
  // 48 + 8 + 2 + 4 (flags) + 40 + 2 > 100: the F flag counts, as in memcached's item_size_ok.
  ExpectParses("ms k 40 F1\r\n" + std::string(40, 'x') + "\r\nmn\r\n",
               {"ms !SERVER_ERROR object too large for cache key=k meta=F1 F=1", "mn"}, options);
}

TEST(ParserTest, McrouterExtensions) {
  ExpectParses(
      "lease-get k\r\nmetaget k\r\nlease-set k 7 1 0 2\r\nab\r\n",
      {"lease-get !SERVER_ERROR unsupported command", "metaget !SERVER_ERROR unsupported command",
       "lease-set key=k flags=1 cas=7 data=ab"});
}

TEST(ParserTest, NulTruncatesTheLine) {
  ExpectParses(std::string("get a\0b\r\n", 9), {"get keys=a"});
}

TEST(ParserTest, HttpRequestCloses) {
  ExpectParses("get k\r\nGET / HTTP/1.1\r\nget j\r\n", {"get keys=k", "CLOSE"});
}

TEST(ParserTest, LongLineWithoutNewlineCloses) {
  std::string junk = "set " + std::string(3000, 'a');
  EXPECT_EQ(Replay(junk, 100), std::vector<std::string>{"CLOSE"});
  // ...but a long multi-get line is allowed to keep arriving.
  std::string get = "get";
  while (get.size() < 3000) get += " abcdefgh";
  EXPECT_EQ(Replay(get, 100), std::vector<std::string>{"PENDING"});
  ParserOptions small;
  small.max_get_line = 2500;
  EXPECT_EQ(Replay(get, 100, small), std::vector<std::string>{"CLOSE"});
}

TEST(ParserTest, LongLineWithNewlineInOneReadIsParsed) {
  // As in memcached, only a buffer holding no newline is judged too long; the same line split
  // across reads closes the connection (see LongLineWithoutNewlineCloses).
  std::string line = "set " + std::string(3000, 'a') + " 0 0 1\r\n";
  EXPECT_EQ(Replay(line, line.size()),
            std::vector<std::string>{"set !CLIENT_ERROR bad command line format"});
}

TEST(ParserTest, BareNewlineLineEndings) {
  ExpectParses("get a\nversion\n", {"get keys=a", "version"});
}

TEST(ParserTest, TooManyTokensIsAnError) {
  std::string line = "set k 0 0 1";
  for (int i = 0; i < 30; ++i) line += " x";
  ExpectParses(line + "\r\n", {"invalid !ERROR"});
}

}  // namespace
}  // namespace petracache::protocol
