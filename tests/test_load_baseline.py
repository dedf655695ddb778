"""benchmarks.load_baseline: the locked transformers server runs one request at a time, and a
request's TTFT and E2E count its wait for the lock (no model: a fake baseline)."""

import threading
import time

from benchmarks.chat_paths import Run
from benchmarks.load_baseline import LockedSender
from benchmarks.load_workload import RequestSpec


class _FakeBaseline:
    def __init__(self):
        self.running = 0
        self.most = 0
        self._guard = threading.Lock()

    def once(self, image, max_tokens):
        with self._guard:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self._guard:
            self.running -= 1
        return Run(ttft_s=0.01, total_s=0.05, tokens=max_tokens)


def test_one_at_a_time_and_the_wait_counts():
    fake = _FakeBaseline()
    sender = LockedSender(fake)
    records = []
    start = time.perf_counter()
    threads = [threading.Thread(target=lambda i=i: records.append(
        sender.send(RequestSpec(i, "chat", "q", image=b"x", max_tokens=3), start))) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.most == 1
    ttfts = sorted(r.ttft_s for r in records)
    assert ttfts[0] < 0.05 and ttfts[-1] >= 0.1  # the last waited for two whole requests
    assert all(r.ok and r.output_tokens == 3 and r.e2e_s >= r.ttft_s for r in records)
