"""The gRPC floor: a ``Recommender`` that answers every call with one fixed response.

    python benchmarks/grpc_floor.py --port 50777 [--event-loop uvloop]

No model, no batching, no id lookups, no metrics: only what any Python gRPC server pays per
call (grpc.aio's call handling, parsing the request, serializing a 10-item response; for
RecommendBatch, one such response per entry). The load
test runs it beside the real server (``--batch-sizes 64,1,floor``) so a table shows how
close the real server comes to the most this Python gRPC stack can do on the machine, and
therefore the most batching can gain over batch-1 there.
"""

from __future__ import annotations

import argparse

import grpc

from jaxrec.v1 import recommender_pb2 as pb
from jaxrec.v1 import recommender_pb2_grpc as pb_grpc


class FloorServicer(pb_grpc.RecommenderServicer):
    def __init__(self, k: int = 10):
        self.response = pb.RecommendResponse(
            items=[pb.ScoredItem(item_id=str(1000 + i), score=1.0 - i / k, title="") for i in range(k)],
            model="floor")

    async def Recommend(self, request, context):
        return self.response

    async def RecommendBatch(self, request, context):
        out = pb.RecommendBatchResponse()
        for _ in request.requests:
            out.results.add().response.CopyFrom(self.response)
        return out

    async def RecommendStream(self, request_iterator, context):
        answer = pb.RecommendResult(response=self.response)
        async for _ in request_iterator:
            yield answer


async def serve(port: int, k: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RecommenderServicer_to_server(FloorServicer(k), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"serving floor on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def main(argv=None) -> None:
    from jaxrec_server.main import EVENT_LOOPS, run_on_loop
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=50777)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--event-loop", choices=EVENT_LOOPS, default="asyncio")
    args = ap.parse_args(argv)
    run_on_loop(serve(args.port, args.k), args.event_loop)


if __name__ == "__main__":
    main()
