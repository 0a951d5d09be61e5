// An open-loop gRPC load generator in C++ for benchmarks/overload.py (--client cpp).
//
// Why: past ~2x capacity a Python client on one core falls behind its own Poisson schedule
// (its send lag is inside every latency it measures), so the server's latency at 5x-10x could
// not be told apart from the client's. Here a call costs the client a few microseconds.
//
// It sends pre-serialized request messages (a file of 4-byte little-endian lengths + bytes) to
// one unary method through gRPC's generic stub (no generated code), at Poisson arrival times,
// each with a deadline, and writes one line per call to the output file:
//     <grpc status code> <microseconds from the scheduled send> <from the actual send> <send lag> <local> <origin>
// where <origin> says who refused a call, from the status message: 1 gRPC's core (its pending-call
// limit: "Too many pending requests"), 2 jaxrec's admission control ("server overloaded"), 3 the
// client's throttle, 4 anything else, 0 an OK answer (refusals differ in how long they take).
// The caller (overload.py) turns the lines into goodput, percentiles and counts by code.
//
// With THROTTLE_K > 0 it throttles itself as jaxrec's Python clients do (server/throttle.py, the
// SRE book's client-side throttling): over a trailing window of WINDOW_S one-second buckets it
// counts the calls asked for and those the server accepted (any answer but RESOURCE_EXHAUSTED,
// DEADLINE_EXCEEDED or CANCELLED; a sent call counts when it ends), and once the window holds
// 20 calls it refuses a call locally with probability max(0, (requests - K accepts) /
// (requests + 1)): such a call is never sent, and its line has code 8 (RESOURCE_EXHAUSTED) and
// <local> 1.
//
// SERVICE_CONFIG (JSON, "" for none) is the channel's gRPC service config: with jaxrec's retry
// policy (jaxrec_server.client.service_config) gRPC's core retries refused calls itself, and a
// line is written once per call, with its final status, timed from its first send.
//
//   openloop TARGET METHOD REQUESTS_FILE RATE SECONDS DEADLINE_MS SEED OUT_FILE [THROTTLE_K [WINDOW_S [SERVICE_CONFIG]]]
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  Clock::time_point scheduled, sent;
};

static std::vector<std::string> read_requests(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot read ") + path);
  std::vector<std::string> out;
  uint32_t n;
  while (in.read(reinterpret_cast<char*>(&n), 4)) {
    std::string s(n, '\0');
    if (!in.read(&s[0], n)) throw std::runtime_error(std::string("truncated message in ") + path);
    out.push_back(std::move(s));
  }
  if (out.empty()) throw std::runtime_error(std::string("no requests in ") + path);
  return out;
}

// who refused a call (the <origin> column): 0 none (OK), 1 gRPC's core, 2 jaxrec's admission, 4 other
static int origin(const grpc::Status& status) {
  if (status.ok()) return 0;
  const std::string& m = status.error_message();
  if (m.rfind("Too many pending", 0) == 0) return 1;
  if (m.rfind("server overloaded", 0) == 0) return 2;
  return 4;
}

static long us(Clock::duration d) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
}

// The client-side throttle: per-second counts of calls asked for and accepted since the start.
struct Throttle {
  double k;
  int window;
  std::vector<std::atomic<long>> requests, accepts;
  Throttle(double k_, int window_, size_t seconds) : k(k_), window(window_), requests(seconds), accepts(seconds) {}
  size_t bucket(long second) const { return std::min(static_cast<size_t>(second), requests.size() - 1); }
  double probability(long second) const {
    long r = 0, a = 0;
    for (long s = std::max(0L, second - window + 1); s <= second; ++s) {
      r += requests[bucket(s)].load();
      a += accepts[bucket(s)].load();
    }
    if (r < 20) return 0.0;  // kMinRequests, as server/throttle.py
    return std::max(0.0, (r - k * a) / (r + 1.0));
  }
  void ended(long second, int code) {  // a sent call's end
    requests[bucket(second)].fetch_add(1);
    if (code != 8 && code != 4 && code != 1) accepts[bucket(second)].fetch_add(1);
  }
};

int main(int argc, char** argv) {
  if (argc < 9 || argc > 12) {
    std::cerr << "usage: openloop TARGET METHOD REQUESTS_FILE RATE SECONDS DEADLINE_MS SEED OUT_FILE "
                 "[THROTTLE_K [WINDOW_S [SERVICE_CONFIG]]]\n";
    return 2;
  }
  const std::string target = argv[1], method = argv[2];
  const double rate = std::stod(argv[4]), seconds = std::stod(argv[5]), deadline_ms = std::stod(argv[6]);
  const unsigned seed = static_cast<unsigned>(std::stoul(argv[7]));
  const double throttle_k = argc > 9 ? std::stod(argv[9]) : 0.0;
  const int window_s = argc > 10 ? std::stoi(argv[10]) : 10;
  if (throttle_k != 0.0 && (throttle_k < 1.0 || window_s < 1)) {
    std::cerr << "openloop: THROTTLE_K must be 0 (off) or >= 1, WINDOW_S >= 1\n";
    return 2;
  }
  std::vector<std::string> requests;
  try {
    requests = read_requests(argv[3]);
  } catch (const std::exception& e) {
    std::cerr << "openloop: " << e.what() << "\n";
    return 2;
  }
  std::vector<grpc::ByteBuffer> payloads;
  for (auto& r : requests) {
    grpc::Slice slice(r.data(), r.size());
    payloads.emplace_back(&slice, 1);
  }
  grpc::ChannelArguments channel_args;
  const std::string service_config = argc > 11 ? argv[11] : "";
  if (!service_config.empty()) channel_args.SetServiceConfigJSON(service_config);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), channel_args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::cerr << "openloop: cannot connect to " << target << "\n";
    return 1;
  }
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  FILE* out = std::fopen(argv[8], "w");
  if (!out) {
    std::cerr << "openloop: cannot write " << argv[8] << "\n";
    return 2;
  }
  std::atomic<long> pending{0};
  std::mutex out_lock;  // lines come from the reaper (answers) and the sender (local refusals)
  const auto t0 = Clock::now();
  auto second = [&](Clock::time_point t) { return static_cast<long>(us(t - t0) / 1000000); };
  Throttle throttle(throttle_k, window_s, static_cast<size_t>(seconds + deadline_ms / 1000) + 2);
  std::thread reaper([&] {  // completions: one line per finished call
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
      std::unique_ptr<Call> c(static_cast<Call*>(tag));
      auto now = Clock::now();
      const int code = static_cast<int>(c->status.error_code());
      throttle.ended(second(now), code);
      {
        std::lock_guard<std::mutex> g(out_lock);
        std::fprintf(out, "%d %ld %ld %ld 0 %d\n", code, us(now - c->scheduled), us(now - c->sent),
                     us(c->sent - c->scheduled), origin(c->status));
      }
      pending.fetch_sub(1);
    }
  });
  std::mt19937_64 rng(seed), throttle_rng(seed + 1);
  std::exponential_distribution<double> gap(rate);
  std::uniform_real_distribution<double> draw(0.0, 1.0);
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  auto at = t0;
  size_t i = 0;
  while (true) {
    at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    if (at >= end) break;
    std::this_thread::sleep_until(at);
    if (throttle_k > 0.0) {
      const auto now = Clock::now();
      const long sec = second(now);
      const double p = throttle.probability(sec);
      if (p > 0.0 && draw(throttle_rng) < p) {  // refused here: never sent
        throttle.requests[throttle.bucket(sec)].fetch_add(1);
        std::lock_guard<std::mutex> g(out_lock);
        std::fprintf(out, "8 %ld 0 %ld 1 3\n", us(now - at), us(now - at));
        ++i;
        continue;
      }
    }
    auto* c = new Call;
    c->scheduled = at;
    c->ctx.set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<long>(deadline_ms * 1000)));
    c->sent = Clock::now();
    c->reader = stub.PrepareUnaryCall(&c->ctx, method, payloads[i++ % payloads.size()], &cq);
    c->reader->StartCall();
    pending.fetch_add(1);
    c->reader->Finish(&c->response, &c->status, c);
  }
  const double sent_for = std::chrono::duration<double>(Clock::now() - t0).count();
  while (pending.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  cq.Shutdown();
  reaper.join();
  std::fclose(out);
  std::printf("{\"sent\": %zu, \"sent_for_s\": %.6f}\n", i, sent_for);
  return 0;
}
