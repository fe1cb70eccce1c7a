// Replays every tests/golden/*.golden transcript in-process, through Session + Engine +
// MemoryStore, with the request bytes fed whole and split into 1- and 7-byte pieces. The same
// files run against real memcached and the real binary in tests/integration/golden_replay.py;
// the format is described in tests/golden/README.md.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/session.h"
#include "storage/memory_store.h"

namespace petracache::server {
namespace {

struct Part {
  bool literal = true;
  std::string text;     // literal bytes, or the placeholder / variable name
  std::string capture;  // {cas:x} / {num:x}: where the matched digits go
};

struct Segment {
  std::vector<Part> request;
  std::vector<Part> expect;
  double sleep = 0;
  int line = 0;
};

struct Golden {
  std::vector<Segment> segments;
  bool expects_close = false;
};

bool IsPlaceholder(const std::string& name) {
  return name == "num" || name == "cas" || name == "any" || name == "stats";
}

std::vector<Part> Unescape(const std::string& text) {
  std::vector<Part> parts;
  std::string lit;
  auto flush = [&] {
    if (!lit.empty()) parts.push_back(Part{true, lit, ""});
    lit.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      char e = text[++i];
      switch (e) {
        case 'r':
          lit += '\r';
          break;
        case 'n':
          lit += '\n';
          break;
        case 't':
          lit += '\t';
          break;
        case '0':
          lit += '\0';
          break;
        case '\\':
          lit += '\\';
          break;
        case 'x':
          lit += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
          i += 2;
          break;
        default:
          ADD_FAILURE() << "bad escape in " << text;
          break;
      }
    } else if (c == '{') {
      size_t end = text.find('}', i);
      std::string body = text.substr(i + 1, end - i - 1);
      i = end;
      if (body.rfind("rep:", 0) == 0) {  // {rep:N:C}
        size_t colon = body.find(':', 4);
        lit.append(std::stoul(body.substr(4, colon - 4)), body[colon + 1]);
        continue;
      }
      flush();
      size_t colon = body.find(':');
      Part p{false, body.substr(0, colon),
             colon == std::string::npos ? "" : body.substr(colon + 1)};
      parts.push_back(p);
    } else {
      lit += c;
    }
  }
  flush();
  return parts;
}

Golden Parse(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  Golden g;
  Segment cur;
  std::vector<std::string> captured_now;  // captures in the current segment's replies
  auto finish = [&] {
    if (!cur.request.empty() || !cur.expect.empty() || cur.sleep > 0) g.segments.push_back(cur);
    cur = Segment();
    captured_now.clear();
  };
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.rfind("#", 0) == 0) continue;
    if (line.find_first_not_of(" \t") == std::string::npos || line == "==" || line == "@sync") {
      finish();
      continue;
    }
    if (line.rfind("@sleep ", 0) == 0) {
      cur.sleep = std::stod(line.substr(7));
      finish();
      continue;
    }
    if (cur.request.empty() && cur.expect.empty()) cur.line = n;
    std::vector<Part> parts = Unescape(line.substr(2));
    if (line.rfind("> ", 0) == 0) {
      // A request using a value captured in this segment's replies starts a new segment.
      for (const Part& p : parts) {
        if (!p.literal &&
            std::find(captured_now.begin(), captured_now.end(), p.text) != captured_now.end()) {
          finish();
          cur.line = n;
          break;
        }
      }
      cur.request.insert(cur.request.end(), parts.begin(), parts.end());
    } else if (line.rfind("< ", 0) == 0) {
      for (const Part& p : parts) {
        if (!p.literal && p.text == "close") {
          g.expects_close = true;
          continue;
        }
        if (!p.capture.empty()) captured_now.push_back(p.capture);
        cur.expect.push_back(p);
      }
    } else {
      ADD_FAILURE() << path << ":" << n << ": unknown line";
    }
  }
  finish();
  return g;
}

// Matches `data` against the expected parts exactly (all of data must be used).
bool Match(const std::vector<Part>& parts, const std::string& data,
           std::map<std::string, std::string>* vars, std::string* why) {
  size_t pos = 0;
  for (const Part& p : parts) {
    std::string lit;
    if (!p.literal && IsPlaceholder(p.text)) {
      size_t start = pos;
      if (p.text == "num" || p.text == "cas") {
        while (pos < data.size() && std::isdigit(static_cast<unsigned char>(data[pos]))) ++pos;
        if (pos == start) {
          *why = "expected digits at byte " + std::to_string(pos);
          return false;
        }
        if (!p.capture.empty()) (*vars)[p.capture] = data.substr(start, pos - start);
      } else if (p.text == "any") {
        while (pos < data.size() && data[pos] != '\r' && data[pos] != '\n') ++pos;
      } else {  // stats: any number of "STAT ...\r\n" lines
        while (data.compare(pos, 5, "STAT ") == 0) {
          size_t eol = data.find("\r\n", pos);
          if (eol == std::string::npos) break;
          pos = eol + 2;
        }
      }
      continue;
    }
    lit = p.literal ? p.text : (*vars)[p.text];
    if (data.compare(pos, lit.size(), lit) != 0) {
      *why = "mismatch at byte " + std::to_string(pos);
      return false;
    }
    pos += lit.size();
  }
  if (pos != data.size()) {
    *why = "unexpected extra bytes at " + std::to_string(pos);
    return false;
  }
  return true;
}

std::string Printable(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n\n";
    } else if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out.size() > 3000 ? out.substr(0, 3000) + "..." : out;
}

std::vector<std::string> GoldenFiles() {
  std::vector<std::string> files;
  std::string dir = PETRACACHE_SOURCE_ROOT "/tests/golden";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name.size() > 7 && name.substr(name.size() - 7) == ".golden") files.push_back(name);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, ReplaysInProcess) {
  Golden golden = Parse(PETRACACHE_SOURCE_ROOT "/tests/golden/" + GetParam());
  ASSERT_FALSE(golden.segments.empty());
  for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) {
    SCOPED_TRACE("fragment size " + (step == 0 ? std::string("whole") : std::to_string(step)));
    FakeClock clock;
    storage::MemoryStore store(&clock);
    engine::EngineOptions options;
    options.version = "1.6.18 petracache-test";
    engine::Engine engine(&store, &clock, options);
    Session session(&engine, engine.RegisterStats(), SessionOptions{});
    std::map<std::string, std::string> vars;
    std::string input;
    bool closed = false;
    for (const Segment& seg : golden.segments) {
      std::string request;
      for (const Part& p : seg.request) request += p.literal ? p.text : vars[p.text];
      std::string out;
      size_t fed = 0;
      while (fed < request.size() && !closed) {
        size_t n = step == 0 ? request.size() : std::min(step, request.size() - fed);
        input.append(request, fed, n);
        fed += n;
        SessionResult r = session.Process(input, &out);
        input.erase(0, r.consumed);
        closed = r.action == SessionAction::kClose;
        ASSERT_NE(r.action, SessionAction::kNeedDisk);
      }
      std::string why;
      EXPECT_TRUE(Match(seg.expect, out, &vars, &why))
          << GetParam() << ":" << seg.line << ": " << why << "\n--- got:\n"
          << Printable(out);
      if (seg.sleep > 0) clock.Advance(static_cast<int64_t>(std::ceil(seg.sleep)));
    }
    EXPECT_EQ(closed, golden.expects_close) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(Transcripts, GoldenTest, ::testing::ValuesIn(GoldenFiles()),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param.substr(0, param.param.size() - 7);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace petracache::server
