// An open-loop gRPC load generator in C++ for benchmarks/overload.py (--client cpp).
//
// Why: past ~2x capacity a Python client on one core falls behind its own Poisson schedule
// (its send lag is inside every latency it measures), so the server's latency at 5x-10x could
// not be told apart from the client's. Here a call costs the client a few microseconds.
//
// It sends pre-serialized request messages (a file of 4-byte little-endian lengths + bytes) to
// one unary method through gRPC's generic stub (no generated code), at Poisson arrival times,
// each with a deadline, and writes one line per call to the output file:
//     <grpc status code> <microseconds from the scheduled send> <from the actual send> <send lag>
// The caller (overload.py) turns the lines into goodput, percentiles and counts by code.
//
//   openloop TARGET METHOD REQUESTS_FILE RATE SECONDS DEADLINE_MS SEED OUT_FILE
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
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

static long us(Clock::duration d) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
}

int main(int argc, char** argv) {
  if (argc != 9) {
    std::cerr << "usage: openloop TARGET METHOD REQUESTS_FILE RATE SECONDS DEADLINE_MS SEED OUT_FILE\n";
    return 2;
  }
  const std::string target = argv[1], method = argv[2];
  const double rate = std::stod(argv[4]), seconds = std::stod(argv[5]), deadline_ms = std::stod(argv[6]);
  const unsigned seed = static_cast<unsigned>(std::stoul(argv[7]));
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
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
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
  std::thread reaper([&] {  // completions: one line per finished call
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
      std::unique_ptr<Call> c(static_cast<Call*>(tag));
      auto now = Clock::now();
      std::fprintf(out, "%d %ld %ld %ld\n", static_cast<int>(c->status.error_code()), us(now - c->scheduled),
                   us(now - c->sent), us(c->sent - c->scheduled));
      pending.fetch_sub(1);
    }
  });
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate);
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  auto at = t0;
  size_t i = 0;
  while (true) {
    at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    if (at >= end) break;
    std::this_thread::sleep_until(at);
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
