// petracache-loadgen: a memcached text-protocol load generator. N connections over M threads,
// one epoll loop per thread, closed-loop (a fixed window of requests in flight per connection)
// or open-loop at a fixed rate with latency measured from each request's intended send time.
// Prints one JSON line on stdout and a human summary on stderr. See docs/benchmarks.md.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "histogram.h"
#include "key_distribution.h"
#include "reply_reader.h"

namespace petracache::bench {
namespace {

constexpr uint32_t kMaxMultiGet = 256;
constexpr size_t kReadChunk = 64 * 1024;
constexpr uint64_t kNanosPerSecond = 1'000'000'000;

uint64_t NowNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kNanosPerSecond + static_cast<uint64_t>(ts.tv_nsec);
}

// SIGINT/SIGTERM end the run early but normally: the measured window closes at this time and
// the results so far are printed (run_bench.py stops open-ended runs this way).
std::atomic<uint64_t> g_stop_at{UINT64_MAX};

extern "C" void OnStopSignal(int) {
  uint64_t expected = UINT64_MAX;
  g_stop_at.compare_exchange_strong(expected, NowNanos());
}

double WallSeconds() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string server = "127.0.0.1:11211";
  int threads = 1;
  int connections = 20;
  int pipeline = 1;
  double get_ratio = 0.9;
  uint32_t value_min = 1000;
  uint32_t value_max = 1000;
  uint64_t keys = 100000;
  std::string key_dist = "uniform";
  bool zipf = false;
  double zipf_exponent = 0.0;
  std::string key_prefix = "key:";
  uint32_t multiget = 1;
  bool prefill = false;
  int prefill_depth = 64;
  double duration = 10.0;
  double warmup = 1.0;
  double rate = 0.0;
  bool timeline = false;
  double timeline_interval = 1.0;
  bool fill_on_miss = false;
  uint64_t hot_keys = 0;
  double reconnect_ms = 10.0;
  double connect_timeout = 5.0;
  uint64_t seed = 1;
  std::string label;
};

constexpr char kUsage[] = R"(usage: petracache-loadgen [options]
  --server HOST:PORT       memcached-protocol server (127.0.0.1:11211)
  --threads M              client threads, one epoll loop each (1)
  --connections N          connections in total, spread over the threads (20)
  --pipeline D             requests in flight per connection (1 = no pipelining)
  --get-ratio F            fraction of operations that are gets, the rest sets (0.9)
  --value-size B|MIN-MAX   value bytes, fixed or uniform in a range (1000)
  --keys K                 key space size (100000)
  --key-dist uniform|zipf[:S]  key popularity; zipf exponent S (0.99)
  --key-prefix P           key text prefix before the 10-digit id ("key:")
  --multiget W             keys per get request (1, at most 256)
  --prefill                first set every key once (pipelined), then measure
  --prefill-depth D        sets in flight per connection while prefilling (64)
  --duration S             measured seconds (10; 0 = prefill only); SIGINT/SIGTERM ends
                           the run early and still prints the results
  --warmup S               seconds of load before measuring (1)
  --rate R                 open loop: R requests/s in total, latency from intended send
                           time (0 = closed loop: each connection keeps D in flight)
  --fill-on-miss           after a get miss, set the missed key (a cache-aside client)
  --hot-keys N             also report the latency of gets whose key is among the N most
                           popular (hot_get_latency_us): the requests the caches answer
  --timeline               add per-interval counters (ops, hits, misses, errors) to the JSON
  --timeline-interval S    seconds per timeline bucket (1)
  --reconnect-ms T         wait before reconnecting a failed connection (10)
  --connect-timeout S      keep retrying the first connections this long (5)
  --seed N                 random seed (1)
  --label TEXT             echoed in the JSON output
)";

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "petracache-loadgen: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

bool ParseUint(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    if (value > (UINT64_MAX - 9) / 10) return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = value;
  return true;
}

bool ParseDouble(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0' || !std::isfinite(value)) return false;
  *out = value;
  return true;
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) UsageError("unexpected argument " + arg);
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const auto flag = [&]() {
      if (has_value) UsageError("--" + name + " takes no value");
    };
    const auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) UsageError("--" + name + " needs a value");
      return argv[++i];
    };
    const auto uint_value = [&](uint64_t lo, uint64_t hi) -> uint64_t {
      const std::string text = next();
      uint64_t v = 0;
      if (!ParseUint(text, &v) || v < lo || v > hi) {
        UsageError("--" + name + ": expected an integer in [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "], got '" + text + "'");
      }
      return v;
    };
    const auto double_value = [&](double lo, double hi) -> double {
      const std::string text = next();
      double v = 0;
      if (!ParseDouble(text, &v) || v < lo || v > hi) {
        UsageError("--" + name + ": expected a number in [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "], got '" + text + "'");
      }
      return v;
    };
    if (name == "server") {
      o.server = next();
    } else if (name == "threads") {
      o.threads = static_cast<int>(uint_value(1, 256));
    } else if (name == "connections") {
      o.connections = static_cast<int>(uint_value(1, 100000));
    } else if (name == "pipeline") {
      o.pipeline = static_cast<int>(uint_value(1, 4096));
    } else if (name == "get-ratio") {
      o.get_ratio = double_value(0.0, 1.0);
    } else if (name == "value-size") {
      const std::string text = next();
      const size_t dash = text.find('-');
      uint64_t lo = 0;
      uint64_t hi = 0;
      const bool ok = dash == std::string::npos ? ParseUint(text, &lo) && (hi = lo, true)
                                                : ParseUint(text.substr(0, dash), &lo) &&
                                                      ParseUint(text.substr(dash + 1), &hi);
      if (!ok || lo > hi || hi > (uint64_t{1} << 20)) {
        UsageError("--value-size: expected BYTES or MIN-MAX (at most 1 MiB), got '" + text + "'");
      }
      o.value_min = static_cast<uint32_t>(lo);
      o.value_max = static_cast<uint32_t>(hi);
    } else if (name == "keys") {
      o.keys = uint_value(1, 9'999'999'999ULL);
    } else if (name == "key-dist") {
      o.key_dist = next();
      if (!KeyChooser::ParseSpec(o.key_dist, &o.zipf, &o.zipf_exponent)) {
        UsageError("--key-dist: expected uniform, zipf or zipf:<exponent>, got '" + o.key_dist +
                   "'");
      }
    } else if (name == "key-prefix") {
      o.key_prefix = next();
      if (o.key_prefix.size() > 200 || o.key_prefix.find_first_of(" \r\n\t") != std::string::npos) {
        UsageError("--key-prefix: at most 200 bytes, no whitespace");
      }
    } else if (name == "multiget") {
      o.multiget = static_cast<uint32_t>(uint_value(1, kMaxMultiGet));
    } else if (name == "prefill") {
      flag();
      o.prefill = true;
    } else if (name == "prefill-depth") {
      o.prefill_depth = static_cast<int>(uint_value(1, 4096));
    } else if (name == "duration") {
      o.duration = double_value(0.0, 86400.0);
    } else if (name == "warmup") {
      o.warmup = double_value(0.0, 86400.0);
    } else if (name == "rate") {
      o.rate = double_value(0.0, 1e9);
    } else if (name == "timeline-interval") {
      o.timeline_interval = double_value(0.001, 3600.0);
    } else if (name == "timeline") {
      flag();
      o.timeline = true;
    } else if (name == "fill-on-miss") {
      flag();
      o.fill_on_miss = true;
    } else if (name == "hot-keys") {
      o.hot_keys = uint_value(0, UINT64_MAX);
    } else if (name == "reconnect-ms") {
      o.reconnect_ms = double_value(0.0, 60000.0);
    } else if (name == "connect-timeout") {
      o.connect_timeout = double_value(0.0, 3600.0);
    } else if (name == "seed") {
      o.seed = uint_value(0, UINT64_MAX);
    } else if (name == "label") {
      o.label = next();
    } else {
      UsageError("unknown option --" + name);
    }
  }
  if (o.threads > o.connections) o.threads = o.connections;
  return o;
}

bool ParseAddress(const std::string& text, sockaddr_in* addr) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  uint64_t port = 0;
  if (!ParseUint(text.substr(colon + 1), &port) || port == 0 || port > 65535) return false;
  std::memset(addr, 0, sizeof(*addr));
  addr->sin_family = AF_INET;
  addr->sin_port = htons(static_cast<uint16_t>(port));
  std::string host = text.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  return inet_pton(AF_INET, host.c_str(), &addr->sin_addr) == 1;
}

// ---------------------------------------------------------------------------------------------
// Counters

struct Counters {
  uint64_t ops = 0;
  uint64_t gets = 0;
  uint64_t sets = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t errors = 0;  // unexpected replies (SERVER_ERROR, garbage)

  void Add(const Counters& o) {
    ops += o.ops;
    gets += o.gets;
    sets += o.sets;
    hits += o.hits;
    misses += o.misses;
    errors += o.errors;
  }
};

struct WorkerResult {
  Counters measured;
  Histogram all;
  Histogram get;
  Histogram set;
  Histogram hot_get;   // gets of one of the --hot-keys most popular keys
  Histogram send_lag;  // open loop: actual send time - intended send time, measured window
  std::vector<Counters> timeline;  // per timeline interval since the load phase began
  uint64_t conn_errors = 0;        // connections lost or refused (each reconnect attempt)
  uint64_t dropped = 0;            // requests in flight on a connection that failed
  uint64_t unfinished = 0;         // measured-window requests not answered by the end
  uint64_t prefill_sets = 0;
  uint64_t prefill_errors = 0;
  bool connect_failed = false;
  bool prefill_failed = false;  // the server stayed unreachable during the prefill
};

// What the threads share: the phase barrier and the time the load phase began.
struct Shared;
struct StampLoadStart {
  Shared* shared;
  void operator()() noexcept;
};
struct Shared {
  explicit Shared(int threads) : prefill_done(threads, StampLoadStart{this}) {}

  std::barrier<StampLoadStart> prefill_done;
  std::atomic<uint64_t> load_start{0};
  std::atomic<double> load_start_wall{0.0};
  std::atomic<int> running{0};  // workers that have not returned yet
};
void StampLoadStart::operator()() noexcept {
  // The last thread to finish prefilling opens the load phase for all of them.
  shared->load_start_wall.store(WallSeconds(), std::memory_order_release);
  shared->load_start.store(NowNanos(), std::memory_order_release);
}

// ---------------------------------------------------------------------------------------------
// Connections and the per-thread loop

struct InFlight {
  RequestKind kind = RequestKind::kGet;
  uint32_t key_count = 0;
  bool hot = false;    // a get of one of the --hot-keys most popular keys
  uint64_t start = 0;  // send time (closed loop) or intended send time (open loop)
};

struct Connection {
  int index = 0;  // global, 0..connections-1
  int fd = -1;
  uint64_t reconnect_at = 0;
  uint64_t down_since = 0;  // when the connection failed (0 while connected)

  // Requests in flight, oldest first: a ring of `window` slots, each with room for the keys
  // of one multi-get in `ring_keys`.
  std::vector<InFlight> ring;
  std::vector<uint64_t> ring_keys;
  size_t head = 0;
  size_t count = 0;
  PendingReply pending;

  std::string out;
  size_t out_pos = 0;
  bool want_write = false;

  std::vector<char> in;
  size_t in_start = 0;
  size_t in_end = 0;

  uint64_t next_intended = 0;   // open loop: when the next request is due
  uint64_t prefill_next = 0;    // next key id this connection prefills
  std::vector<uint64_t> fills;  // fill-on-miss: keys to set before the next random operation
};

class Worker {
 public:
  Worker(const Options& options, Shared* shared, int id, std::vector<int> connection_ids,
         const std::string& values, const sockaddr_in& addr)
      : o_(options),
        shared_(shared),
        id_(id),
        values_(values),
        addr_(addr),
        format_(options.key_prefix),
        chooser_(options.keys, options.zipf, options.zipf_exponent),
        rng_(options.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(id) + 1) {
    const size_t window = static_cast<size_t>(std::max(o_.pipeline, o_.prefill_depth));
    for (int index : connection_ids) {
      auto c = std::make_unique<Connection>();
      c->index = index;
      c->ring.resize(window);
      c->ring_keys.resize(window * o_.multiget);
      c->in.resize(2 * kReadChunk);
      c->prefill_next = static_cast<uint64_t>(index);
      conns_.push_back(std::move(c));
    }
  }

  void Run() {
    // Open loop sleeps until the next request is due; the default 50 us timer slack would
    // make every such wake-up late (and that lateness is charged to the server).
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) {
      std::perror("epoll_create1");
      std::exit(1);
    }
    const uint64_t deadline =
        NowNanos() + static_cast<uint64_t>(o_.connect_timeout * kNanosPerSecond);
    for (auto& c : conns_) {
      while (!Connect(c.get())) {
        if (NowNanos() >= deadline) {
          result_.connect_failed = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (result_.connect_failed) break;
    }
    if (!result_.connect_failed && o_.prefill) Prefill();
    shared_->prefill_done.arrive_and_wait();
    if (!result_.connect_failed && !result_.prefill_failed && o_.duration > 0) Load();
    for (auto& c : conns_) {
      if (c->fd >= 0) close(c->fd);
    }
    close(epfd_);
    shared_->running.fetch_sub(1, std::memory_order_release);
  }

  WorkerResult& result() { return result_; }

 private:
  enum class Phase { kPrefill, kLoad };

  bool Connect(Connection* c) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      std::perror("socket");
      std::exit(1);
    }
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_)) != 0) {
      close(fd);
      ++result_.conn_errors;
      return false;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
      std::perror("fcntl");
      std::exit(1);
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      std::perror("epoll_ctl");
      std::exit(1);
    }
    c->fd = fd;
    c->down_since = 0;
    c->head = 0;
    c->count = 0;
    c->out.clear();
    c->out_pos = 0;
    c->want_write = false;
    c->in_start = 0;
    c->in_end = 0;
    return true;
  }

  // Drops the connection (its in-flight requests are lost) and schedules a reconnect.
  void Fail(Connection* c, uint64_t now) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd, nullptr);
    close(c->fd);
    c->fd = -1;
    result_.dropped += c->count;
    if (phase_ == Phase::kPrefill) result_.prefill_errors += c->count;
    c->count = 0;
    if (c->down_since == 0) c->down_since = now;
    ++result_.conn_errors;
    c->reconnect_at = now + static_cast<uint64_t>(o_.reconnect_ms * 1e6);
  }

  void Reconnect(uint64_t now) {
    for (auto& c : conns_) {
      if (c->fd >= 0 || c->reconnect_at > now) continue;
      if (!Connect(c.get())) {
        c->reconnect_at = now + static_cast<uint64_t>(o_.reconnect_ms * 1e6);
      }
    }
  }

  uint32_t ValueSize() {
    if (o_.value_min == o_.value_max) return o_.value_min;
    return o_.value_min + static_cast<uint32_t>(rng_.Below(o_.value_max - o_.value_min + 1));
  }

  void AppendSet(Connection* c, uint64_t key) {
    const uint32_t size = ValueSize();
    char header[48];
    c->out.append("set ");
    format_.Append(key, &c->out);
    const int n = std::snprintf(header, sizeof(header), " 0 0 %" PRIu32 "\r\n", size);
    c->out.append(header, static_cast<size_t>(n));
    // Different keys get differently aligned slices of the same random bytes.
    c->out.append(values_.data() + key % 256, size);
    c->out.append("\r\n");
  }

  // Queues one request (it goes out with the next Flush). start: its send or intended time.
  void Issue(Connection* c, uint64_t start) {
    const size_t slot = (c->head + c->count) % c->ring.size();
    InFlight& f = c->ring[slot];
    f.hot = false;
    uint64_t* keys = &c->ring_keys[slot * o_.multiget];
    f.start = start;
    if (phase_ == Phase::kPrefill) {
      f.kind = RequestKind::kSet;
      f.key_count = 1;
      keys[0] = c->prefill_next;
      c->prefill_next += static_cast<uint64_t>(o_.connections);
      AppendSet(c, keys[0]);
    } else if (!c->fills.empty()) {
      f.kind = RequestKind::kSet;
      f.key_count = 1;
      keys[0] = c->fills.back();
      c->fills.pop_back();
      AppendSet(c, keys[0]);
    } else if (rng_.NextDouble() < o_.get_ratio) {
      f.kind = RequestKind::kGet;
      f.key_count = o_.multiget;
      c->out.append("get");
      f.hot = o_.hot_keys > 0;
      for (uint32_t i = 0; i < o_.multiget; ++i) {
        uint64_t rank = 0;
        keys[i] = chooser_.Next(rng_, &rank);
        f.hot = f.hot && rank < o_.hot_keys;
        c->out.push_back(' ');
        format_.Append(keys[i], &c->out);
      }
      c->out.append("\r\n");
    } else {
      f.kind = RequestKind::kSet;
      f.key_count = 1;
      keys[0] = chooser_.Next(rng_);
      AppendSet(c, keys[0]);
    }
    if (c->count == 0) StartPending(c);
    ++c->count;
  }

  void StartPending(Connection* c) {
    const InFlight& f = c->ring[c->head];
    c->pending = PendingReply{};
    c->pending.kind = f.kind;
    c->pending.keys = &c->ring_keys[c->head * o_.multiget];
    c->pending.key_count = f.key_count;
  }

  // Tops the connection's window up and sends. Closed loop: up to `window` in flight, all
  // stamped `now`. Open loop: every request already due, at its intended time.
  void Fill(Connection* c, uint64_t now) {
    if (c->fd < 0) return;
    if (phase_ == Phase::kPrefill) {
      while (c->count < static_cast<size_t>(o_.prefill_depth) && c->prefill_next < o_.keys) {
        Issue(c, now);
      }
    } else if (o_.rate > 0) {
      while (c->count < static_cast<size_t>(o_.pipeline) && c->next_intended <= now) {
        if (c->next_intended >= measure_start_) result_.send_lag.Record(now - c->next_intended);
        Issue(c, c->next_intended);
        c->next_intended += interval_;
      }
    } else {
      while (c->count < static_cast<size_t>(o_.pipeline)) Issue(c, now);
    }
    Flush(c, now);
  }

  void Flush(Connection* c, uint64_t now) {
    while (c->out_pos < c->out.size()) {
      const ssize_t n =
          send(c->fd, c->out.data() + c->out_pos, c->out.size() - c->out_pos, MSG_NOSIGNAL);
      if (n > 0) {
        c->out_pos += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        SetWantWrite(c, true);
        return;
      }
      Fail(c, now);
      return;
    }
    c->out.clear();
    c->out_pos = 0;
    SetWantWrite(c, false);
  }

  void SetWantWrite(Connection* c, bool want) {
    if (c->want_write == want) return;
    c->want_write = want;
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.ptr = c;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, c->fd, &ev);
  }

  void Complete(Connection* c, uint64_t now, bool error) {
    const InFlight& f = c->ring[c->head];
    const uint64_t bucket = (now - load_start_) / timeline_interval_;
    if (phase_ == Phase::kPrefill) {
      ++result_.prefill_sets;
      if (error) ++result_.prefill_errors;
    } else {
      const uint32_t hits = f.kind == RequestKind::kGet && !error ? c->pending.hits : 0;
      const uint32_t misses = f.kind == RequestKind::kGet && !error ? f.key_count - hits : 0;
      const auto count = [&](Counters* k) {
        ++k->ops;
        if (f.kind == RequestKind::kGet) {
          ++k->gets;
        } else {
          ++k->sets;
        }
        k->hits += hits;
        k->misses += misses;
        if (error) ++k->errors;
      };
      if (o_.timeline && bucket < result_.timeline.size()) count(&result_.timeline[bucket]);
      if (now >= measure_start_ && now < end_ && now < g_stop_at.load(std::memory_order_relaxed)) {
        count(&result_.measured);
        const uint64_t latency = now > f.start ? now - f.start : 0;
        result_.all.Record(latency);
        (f.kind == RequestKind::kGet ? result_.get : result_.set).Record(latency);
        if (f.kind == RequestKind::kGet && f.hot) result_.hot_get.Record(latency);
      }
    }
    c->head = (c->head + 1) % c->ring.size();
    --c->count;
    if (c->count > 0) StartPending(c);
  }

  // Reads what the socket has, completes every whole reply, then refills the window.
  void OnReadable(Connection* c) {
    for (;;) {
      if (c->in.size() - c->in_end < kReadChunk) {
        if (c->in_start > 0) {
          std::memmove(c->in.data(), c->in.data() + c->in_start, c->in_end - c->in_start);
          c->in_end -= c->in_start;
          c->in_start = 0;
        }
        if (c->in.size() - c->in_end < kReadChunk) c->in.resize(c->in_end + 2 * kReadChunk);
      }
      const size_t room = c->in.size() - c->in_end;
      const ssize_t n = recv(c->fd, c->in.data() + c->in_end, room, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        Fail(c, NowNanos());
        return;
      }
      c->in_end += static_cast<size_t>(n);
      if (static_cast<size_t>(n) < room) break;
    }
    const uint64_t now = NowNanos();
    std::vector<uint64_t>* missed = o_.fill_on_miss && phase_ == Phase::kLoad ? &c->fills : nullptr;
    while (c->in_start < c->in_end) {
      if (c->count == 0) {  // bytes nobody asked for
        ++result_.measured.errors;
        Fail(c, now);
        return;
      }
      size_t consumed = 0;
      const std::string_view input(c->in.data() + c->in_start, c->in_end - c->in_start);
      const ReadStatus status = ReadReply(input, format_, &c->pending, &consumed, missed);
      c->in_start += consumed;
      if (status == ReadStatus::kNeedMore) break;
      if (status == ReadStatus::kDesync) {
        ++result_.measured.errors;
        Fail(c, now);
        return;
      }
      Complete(c, now, status == ReadStatus::kErrorLine);
    }
    if (c->in_start == c->in_end) c->in_start = c->in_end = 0;
    Fill(c, o_.rate > 0 ? now : NowNanos());
  }

  // One epoll wait with a nanosecond timeout, then dispatch.
  void Poll(uint64_t timeout_ns) {
    epoll_event events[256];
    timespec ts;
    ts.tv_sec = static_cast<time_t>(timeout_ns / kNanosPerSecond);
    ts.tv_nsec = static_cast<long>(timeout_ns % kNanosPerSecond);
    const int n = epoll_pwait2(epfd_, events, 256, &ts, nullptr);
    if (n < 0) {
      if (errno == EINTR) return;
      std::perror("epoll_pwait2");
      std::exit(1);
    }
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Connection*>(events[i].data.ptr);
      if (c->fd < 0) continue;
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        OnReadable(c);
      } else if (events[i].events & EPOLLOUT) {
        Flush(c, NowNanos());
      }
    }
  }

  void Prefill() {
    const auto timeout = static_cast<uint64_t>(o_.connect_timeout * kNanosPerSecond);
    phase_ = Phase::kPrefill;
    load_start_ = NowNanos();
    for (auto& c : conns_) Fill(c.get(), NowNanos());
    for (;;) {
      if (g_stop_at.load(std::memory_order_relaxed) != UINT64_MAX) return;
      bool done = true;
      for (auto& c : conns_) {
        if (c->fd < 0 || c->count > 0 || c->prefill_next < o_.keys) done = false;
      }
      if (done) return;
      const uint64_t now = NowNanos();
      Reconnect(now);
      // The load phase keeps retrying (a server restart is part of some runs); a prefill
      // that cannot reach the server for --connect-timeout gives up.
      for (auto& c : conns_) {
        if (c->fd < 0 && now - c->down_since > timeout) {
          result_.prefill_failed = true;
          return;
        }
      }
      for (auto& c : conns_) {
        if (c->fd >= 0 && c->count == 0) Fill(c.get(), now);
      }
      Poll(10'000'000);
    }
  }

  void Load() {
    phase_ = Phase::kLoad;
    load_start_ = shared_->load_start.load(std::memory_order_acquire);
    measure_start_ = load_start_ + static_cast<uint64_t>(o_.warmup * kNanosPerSecond);
    end_ = measure_start_ + static_cast<uint64_t>(o_.duration * kNanosPerSecond);
    if (o_.timeline) {
      timeline_interval_ = static_cast<uint64_t>(o_.timeline_interval * 1e9);
      result_.timeline.resize(static_cast<size_t>((end_ - load_start_) / timeline_interval_) + 1);
    }
    if (o_.rate > 0) {
      interval_ = static_cast<uint64_t>(static_cast<double>(o_.connections) * 1e9 / o_.rate);
      // Spread the connections' schedules evenly over one interval.
      for (auto& c : conns_) {
        c->next_intended = load_start_ + interval_ * static_cast<uint64_t>(c->index) /
                                             static_cast<uint64_t>(o_.connections);
      }
    }
    for (auto& c : conns_) Fill(c.get(), NowNanos());
    for (;;) {
      const uint64_t now = NowNanos();
      if (now >= end_ || now >= g_stop_at.load(std::memory_order_relaxed)) break;
      Reconnect(now);
      uint64_t wake = std::min(end_, now + 10'000'000);
      for (auto& c : conns_) {
        if (c->fd < 0) {
          wake = std::min(wake, c->reconnect_at);
        } else if (o_.rate > 0) {
          Fill(c.get(), now);
          if (c->count < static_cast<size_t>(o_.pipeline)) wake = std::min(wake, c->next_intended);
        } else if (c->count == 0) {
          Fill(c.get(), now);  // e.g. just reconnected
        }
      }
      Poll(wake > now ? wake - now : 0);
    }
    // Requests of the measured window still unanswered (in flight or, open loop, overdue and
    // not yet sent): reported so a stall at the very end cannot hide.
    const uint64_t end = std::min(end_, g_stop_at.load(std::memory_order_relaxed));
    for (auto& c : conns_) {
      for (size_t i = 0; i < c->count; ++i) {
        if (c->ring[(c->head + i) % c->ring.size()].start >= measure_start_) ++result_.unfinished;
      }
      if (o_.rate > 0 && c->next_intended < end && end > measure_start_) {
        result_.unfinished += (end - std::max(c->next_intended, measure_start_)) / interval_;
      }
    }
  }

  const Options& o_;
  Shared* shared_;
  int id_;
  const std::string& values_;
  sockaddr_in addr_;
  KeyFormat format_;
  KeyChooser chooser_;
  Rng rng_;
  std::vector<std::unique_ptr<Connection>> conns_;
  int epfd_ = -1;
  Phase phase_ = Phase::kPrefill;
  uint64_t load_start_ = 0;
  uint64_t measure_start_ = 0;
  uint64_t end_ = 0;
  uint64_t interval_ = 1;
  uint64_t timeline_interval_ = kNanosPerSecond;
  WorkerResult result_;
};

// ---------------------------------------------------------------------------------------------
// Output

double CpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out.append(buf);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
  return out;
}

std::string LatencyJson(const Histogram& h) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "{\"count\":%" PRIu64
                ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
                "\"max\":%.1f}",
                h.count(), h.mean() / 1e3, static_cast<double>(h.Percentile(50)) / 1e3,
                static_cast<double>(h.Percentile(90)) / 1e3,
                static_cast<double>(h.Percentile(99)) / 1e3,
                static_cast<double>(h.Percentile(99.9)) / 1e3, static_cast<double>(h.max()) / 1e3);
  return buf;
}

int Main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  sockaddr_in addr;
  if (!ParseAddress(o.server, &addr)) UsageError("--server: expected IPv4:PORT, got " + o.server);

  // Random printable bytes; each set sends a slice of them.
  std::string values(o.value_max + 256, '\0');
  Rng value_rng(o.seed ^ 0x5eedULL);
  for (char& ch : values) ch = static_cast<char>('a' + value_rng.Below(26));

  Shared shared(o.threads);
  std::vector<std::vector<int>> assignment(static_cast<size_t>(o.threads));
  for (int i = 0; i < o.connections; ++i) {
    assignment[static_cast<size_t>(i % o.threads)].push_back(i);
  }
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) {
    workers.push_back(
        std::make_unique<Worker>(o, &shared, t, assignment[static_cast<size_t>(t)], values, addr));
  }
  const uint64_t begin = NowNanos();
  std::vector<std::thread> threads;
  shared.running.store(o.threads, std::memory_order_relaxed);
  for (auto& w : workers) threads.emplace_back([&w]() { w->Run(); });

  // CPU time of the measured window: sampled when it opens and closes.
  while (shared.load_start.load(std::memory_order_acquire) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const uint64_t load_start = shared.load_start.load(std::memory_order_acquire);
  const uint64_t measure_start = load_start + static_cast<uint64_t>(o.warmup * kNanosPerSecond);
  const uint64_t measure_end = measure_start + static_cast<uint64_t>(o.duration * kNanosPerSecond);
  double cpu_start = 0;
  double cpu_end = 0;
  if (o.duration > 0) {
    // Sleeps until t, a stop signal, or the workers' end (a failed prefill), whichever is first.
    const auto sleep_until = [&shared](uint64_t t) {
      for (;;) {
        const uint64_t now = NowNanos();
        if (now >= t || now >= g_stop_at.load(std::memory_order_relaxed) ||
            shared.running.load(std::memory_order_acquire) == 0) {
          return;
        }
        std::this_thread::sleep_for(
            std::chrono::nanoseconds(std::min<uint64_t>(t - now, 10'000'000)));
      }
    };
    sleep_until(measure_start);
    cpu_start = CpuSeconds();
    sleep_until(measure_end);
    cpu_end = CpuSeconds();
  }
  for (auto& t : threads) t.join();

  WorkerResult total;
  bool connect_failed = false;
  bool prefill_failed = false;
  for (auto& w : workers) {
    WorkerResult& r = w->result();
    total.measured.Add(r.measured);
    total.all.Merge(r.all);
    total.get.Merge(r.get);
    total.set.Merge(r.set);
    total.hot_get.Merge(r.hot_get);
    total.send_lag.Merge(r.send_lag);
    if (total.timeline.size() < r.timeline.size()) total.timeline.resize(r.timeline.size());
    for (size_t i = 0; i < r.timeline.size(); ++i) total.timeline[i].Add(r.timeline[i]);
    total.conn_errors += r.conn_errors;
    total.dropped += r.dropped;
    total.unfinished += r.unfinished;
    total.prefill_sets += r.prefill_sets;
    total.prefill_errors += r.prefill_errors;
    connect_failed = connect_failed || r.connect_failed;
    prefill_failed = prefill_failed || r.prefill_failed;
  }
  if (prefill_failed) {
    std::fprintf(stderr, "petracache-loadgen: lost %s during the prefill for over %.1f s\n",
                 o.server.c_str(), o.connect_timeout);
    return 1;
  }
  if (connect_failed) {
    std::fprintf(stderr, "petracache-loadgen: cannot connect to %s within %.1f s\n",
                 o.server.c_str(), o.connect_timeout);
    return 1;
  }
  const double prefill_seconds = static_cast<double>(load_start - begin) / 1e9;
  const Counters& m = total.measured;
  const uint64_t stop_at = g_stop_at.load(std::memory_order_relaxed);
  const double seconds =
      stop_at >= measure_end
          ? o.duration
          : (stop_at > measure_start ? static_cast<double>(stop_at - measure_start) / 1e9 : 0.0);
  const double ops_per_sec = seconds > 0 ? static_cast<double>(m.ops) / seconds : 0.0;
  const uint64_t lookups = m.hits + m.misses;
  const double hit_rate =
      lookups > 0 ? static_cast<double>(m.hits) / static_cast<double>(lookups) : 0.0;
  const double cpu = cpu_end - cpu_start;
  const double cpu_us_per_op = m.ops > 0 ? cpu * 1e6 / static_cast<double>(m.ops) : 0.0;

  std::string json = "{";
  const auto field = [&json](const char* name, const std::string& value) {
    if (json.size() > 1) json.push_back(',');
    json += "\"";
    json += name;
    json += "\":";
    json += value;
  };
  char num[64];
  const auto f = [&num](double v, int digits) {
    std::snprintf(num, sizeof(num), "%.*f", digits, v);
    return std::string(num);
  };
  const auto u = [](uint64_t v) { return std::to_string(v); };
  field("label", JsonString(o.label));
  field("server", JsonString(o.server));
  field("mode", JsonString(o.rate > 0 ? "open" : "closed"));
  field("target_rate", f(o.rate, 1));
  field("duration_s", f(seconds, 3));
  field("stopped_early", stop_at < measure_end ? "true" : "false");
  field("ops", u(m.ops));
  field("ops_per_sec", f(ops_per_sec, 1));
  field("gets", u(m.gets));
  field("sets", u(m.sets));
  field("hits", u(m.hits));
  field("misses", u(m.misses));
  field("hit_rate", f(hit_rate, 6));
  field("errors", u(m.errors));
  field("conn_errors", u(total.conn_errors));
  field("dropped", u(total.dropped));
  field("unfinished", u(total.unfinished));
  field("latency_us", LatencyJson(total.all));
  field("get_latency_us", LatencyJson(total.get));
  field("set_latency_us", LatencyJson(total.set));
  if (o.hot_keys > 0) field("hot_get_latency_us", LatencyJson(total.hot_get));
  if (o.rate > 0) field("send_lag_us", LatencyJson(total.send_lag));
  field("client_cpu_s", f(cpu, 3));
  field("client_cpu_us_per_op", f(cpu_us_per_op, 3));
  field("prefill", "{\"keys\":" + u(o.prefill ? o.keys : 0) + ",\"sets\":" + u(total.prefill_sets) +
                       ",\"errors\":" + u(total.prefill_errors) +
                       ",\"seconds\":" + f(prefill_seconds, 3) + "}");
  std::string config = "{";
  config += "\"threads\":" + u(static_cast<uint64_t>(o.threads));
  config += ",\"connections\":" + u(static_cast<uint64_t>(o.connections));
  config += ",\"pipeline\":" + u(static_cast<uint64_t>(o.pipeline));
  config += ",\"get_ratio\":" + f(o.get_ratio, 4);
  config += ",\"value_min\":" + u(o.value_min) + ",\"value_max\":" + u(o.value_max);
  config += ",\"keys\":" + u(o.keys) + ",\"key_dist\":" + JsonString(o.key_dist);
  config += ",\"multiget\":" + u(o.multiget) + ",\"warmup_s\":" + f(o.warmup, 3);
  config += ",\"fill_on_miss\":" + std::string(o.fill_on_miss ? "true" : "false") + "}";
  field("config", config);
  if (o.timeline) {
    const double wall = shared.load_start_wall.load(std::memory_order_acquire);
    // Up to the bucket the run ended in (a stop signal can end it long before --duration).
    const uint64_t ended = std::min(measure_end, std::min(stop_at, NowNanos()));
    const auto interval = static_cast<uint64_t>(o.timeline_interval * 1e9);
    const size_t buckets =
        std::min(total.timeline.size(), static_cast<size_t>((ended - load_start) / interval) + 1);
    std::string tl = "[";
    for (size_t i = 0; i < buckets; ++i) {
      const Counters& k = total.timeline[i];
      if (i > 0) tl.push_back(',');
      tl += "{\"t\":" + f(wall + static_cast<double>(i) * o.timeline_interval, 3) +
            ",\"ops\":" + u(k.ops) + ",\"hits\":" + u(k.hits) + ",\"misses\":" + u(k.misses) +
            ",\"errors\":" + u(k.errors) + "}";
    }
    tl += "]";
    field("timeline_interval_s", f(o.timeline_interval, 3));
    field("timeline", tl);
  }
  json += "}\n";
  std::fputs(json.c_str(), stdout);
  std::fflush(stdout);

  const std::string title = o.label.empty() ? o.server : "[" + o.label + "] " + o.server;
  std::fprintf(stderr,
               "%s, %d conn x pipeline %d over %d thread(s), %.0f%% gets, %u-%u B values, "
               "%" PRIu64 " keys %s\n",
               title.c_str(), o.connections, o.pipeline, o.threads, o.get_ratio * 100, o.value_min,
               o.value_max, o.keys, o.key_dist.c_str());
  if (o.prefill) {
    std::fprintf(stderr, "  prefill: %" PRIu64 " sets in %.2f s, %" PRIu64 " errors\n",
                 total.prefill_sets, prefill_seconds, total.prefill_errors);
  }
  if (seconds > 0) {
    std::fprintf(stderr,
                 "  %.0f ops/s over %.1f s (%s), hit rate %.4f, errors %" PRIu64
                 ", conn errors %" PRIu64 ", dropped %" PRIu64 ", unfinished %" PRIu64 "\n",
                 ops_per_sec, seconds, o.rate > 0 ? "open loop" : "closed loop", hit_rate, m.errors,
                 total.conn_errors, total.dropped, total.unfinished);
    std::fprintf(stderr, "  latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (mean %.1f)\n",
                 static_cast<double>(total.all.Percentile(50)) / 1e3,
                 static_cast<double>(total.all.Percentile(99)) / 1e3,
                 static_cast<double>(total.all.Percentile(99.9)) / 1e3,
                 static_cast<double>(total.all.max()) / 1e3, total.all.mean() / 1e3);
    if (o.rate > 0) {
      std::fprintf(stderr,
                   "  send lag us (sent later than scheduled): p50 %.1f  p99 %.1f  max %.1f\n",
                   static_cast<double>(total.send_lag.Percentile(50)) / 1e3,
                   static_cast<double>(total.send_lag.Percentile(99)) / 1e3,
                   static_cast<double>(total.send_lag.max()) / 1e3);
    }
    std::fprintf(stderr, "  client cpu %.2f s = %.2f us/op\n", cpu, cpu_us_per_op);
  }
  return m.errors > 0 || total.prefill_errors > 0 ? 3 : 0;
}

}  // namespace
}  // namespace petracache::bench

int main(int argc, char** argv) { return petracache::bench::Main(argc, argv); }
