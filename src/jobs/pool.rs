//! A small pool of job threads: started on demand up to a bound, reused while jobs keep
//! coming, and gone after [`IDLE_EXIT`] without work, so a stream of jobs costs no
//! thread creation (a `clone`, a stack `mmap` and its guard page each) and an idle
//! agent holds no job threads.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A thread with nothing to do for this long exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);
/// Stack for a job thread: it only polls pipes; output buffers live on the heap.
pub const STACK: usize = 256 * 1024;

struct State<W> {
    /// Held by value: no allocation per task (a boxed closure was a `mmap` and `munmap`
    /// a job with musl's allocator, whose size class had no other use).
    tasks: VecDeque<W>,
    threads: usize,
    /// Threads running a task; the others are waiting for one or about to.
    busy: usize,
    /// Threads blocked on the condition variable (only those need a wake-up call).
    asleep: usize,
}

struct Shared<W, T> {
    state: Mutex<State<W>>,
    wake: Condvar,
    /// What a thread does with a task; its result goes to `finish`.
    work: fn(W) -> T,
    /// Called with a task's result once its thread counts as free again, so whoever
    /// hears of the result and hands over the next task finds a thread for it.
    finish: Box<dyn Fn(T) + Send + Sync>,
}

impl<W, T> Shared<W, T> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct Pool<W, T> {
    shared: Arc<Shared<W, T>>,
    max: usize,
}

impl<W: Send + 'static, T: Send + 'static> Pool<W, T> {
    /// At most `max` threads (at least one), each running `work` on a task at a time.
    pub fn new(
        max: usize,
        work: fn(W) -> T,
        finish: impl Fn(T) + Send + Sync + 'static,
    ) -> Pool<W, T> {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    tasks: VecDeque::new(),
                    threads: 0,
                    busy: 0,
                    asleep: 0,
                }),
                wake: Condvar::new(),
                work,
                finish: Box::new(finish),
            }),
            max: max.max(1),
        }
    }

    /// Runs `task` on a pool thread: a free one, a new one while under the bound, else
    /// the first to finish. Fails only when no thread exists and none can be started.
    pub fn run(&self, task: W) -> io::Result<()> {
        let mut state = self.shared.lock();
        state.tasks.push_back(task);
        let free = state.threads - state.busy;
        if free >= state.tasks.len() || state.threads >= self.max {
            let wake = state.asleep > 0;
            // Woken after the lock is let go: a thread woken while it is held would only
            // block on it again (two more context switches on a one-CPU box).
            drop(state);
            if wake {
                self.shared.wake.notify_one();
            }
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("job".into())
            .stack_size(STACK)
            .spawn(move || work(&shared));
        match spawned {
            Ok(_) => {
                state.threads += 1;
                Ok(())
            }
            Err(err) if state.threads == 0 => {
                state.tasks.pop_back();
                Err(err)
            }
            Err(err) => {
                log::warn!("cannot start another job thread ({err}); the job waits for one");
                Ok(())
            }
        }
    }

    /// Threads alive now.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

/// A pool thread: queued tasks, one after another, until idle too long.
fn work<W, T>(shared: &Shared<W, T>) {
    loop {
        let task = {
            let mut state = shared.lock();
            loop {
                if let Some(next) = state.tasks.pop_front() {
                    state.busy += 1;
                    break next;
                }
                state.asleep += 1;
                let (guard, timeout) = shared
                    .wake
                    .wait_timeout(state, IDLE_EXIT)
                    .unwrap_or_else(PoisonError::into_inner);
                state = guard;
                state.asleep -= 1;
                if timeout.timed_out() && state.tasks.is_empty() {
                    state.threads -= 1;
                    return;
                }
            }
        };
        let out = (shared.work)(task);
        shared.lock().busy -= 1;
        (shared.finish)(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Instant;

    #[test]
    fn runs_tasks_on_few_reused_threads() {
        let (tx, rx) = channel();
        let pool = Pool::new(2, |n: u32| n, move |n| tx.send(n).unwrap());
        for n in 0..100 {
            pool.run(n).unwrap();
            // One at a time: the thread that finished takes the next task.
            assert_eq!(rx.recv().unwrap(), n);
        }
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn never_more_threads_than_the_bound_and_queued_tasks_still_run() {
        let (tx, rx) = channel();
        let slow = |n: u32| {
            std::thread::sleep(Duration::from_millis(20));
            n
        };
        let pool = Pool::new(3, slow, move |n| tx.send(n).unwrap());
        for n in 0..20 {
            pool.run(n).unwrap();
            assert!(pool.threads() <= 3);
        }
        let mut got: Vec<u32> = (0..20).map(|_| rx.recv().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn idle_threads_exit() {
        let (tx, rx) = channel();
        let pool = Pool::new(2, |n: u32| n, move |n| tx.send(n).unwrap());
        pool.run(1).unwrap();
        rx.recv().unwrap();
        let deadline = Instant::now() + IDLE_EXIT + Duration::from_secs(10);
        while pool.threads() > 0 {
            assert!(Instant::now() < deadline, "an idle thread stayed");
            std::thread::sleep(Duration::from_millis(100));
        }
        // And the pool starts one again when work comes.
        pool.run(2).unwrap();
        assert_eq!(rx.recv().unwrap(), 2);
    }
}
