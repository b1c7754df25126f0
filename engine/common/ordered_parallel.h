// An ordered parallel map: items computed on worker threads, handed to the
// calling thread in index order through a bounded reorder buffer (the
// dataset generators produce images in parallel and write them in order, so
// the output does not depend on the thread count and memory does not grow
// with the number of items).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace ipsnet {

/// Computes item i = work(i) for every i in [0, n) on `threads` worker
/// threads and calls consume(i, std::move(item)) on the calling thread in
/// index order. make_work() runs once on each worker thread and returns that
/// worker's `work` callable (so a worker can own its scratch buffers). A
/// worker does not start item i before item i - window has been consumed:
/// at most `window` finished items wait at any time. The first exception,
/// from make_work, work or consume, stops everything; it is rethrown once
/// every worker has been joined.
template <typename MakeWork, typename Consume>
void ordered_parallel_map(int64_t n, int threads, int64_t window, const MakeWork& make_work,
                          const Consume& consume) {
  using Work = decltype(make_work());
  using Item = std::decay_t<decltype(std::declval<Work&>()(int64_t{0}))>;
  if (threads < 1) threads = 1;
  if (window < 1) window = 1;
  std::mutex mu;
  std::condition_variable cv_space, cv_ready;
  std::map<int64_t, Item> ready;  // finished, not yet consumed
  int64_t consumed = 0, next = 0;
  bool abort = false;
  std::exception_ptr error;
  auto fail = [&](std::exception_ptr e) {  // with mu held
    if (!error) error = e;
    abort = true;
    cv_ready.notify_all();
    cv_space.notify_all();
  };

  auto worker = [&]() {
    try {
      Work work = make_work();
      for (;;) {
        int64_t i;
        {
          std::unique_lock<std::mutex> lk(mu);
          if (abort || next >= n) return;
          i = next++;
          cv_space.wait(lk, [&] { return abort || i < consumed + window; });
          if (abort) return;
        }
        Item item = work(i);
        std::lock_guard<std::mutex> lk(mu);
        ready.emplace(i, std::move(item));
        cv_ready.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu);
      fail(std::current_exception());
    }
  };

  std::vector<std::thread> pool;
  try {
    for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (int64_t i = 0; i < n; ++i) {
      typename std::map<int64_t, Item>::node_type node;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_ready.wait(lk, [&] { return abort || ready.count(i) > 0; });
        if (abort) break;
        node = ready.extract(i);
      }
      consume(i, std::move(node.mapped()));
      {
        std::lock_guard<std::mutex> lk(mu);
        consumed = i + 1;
      }
      cv_space.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu);
    fail(std::current_exception());
  }
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ipsnet
