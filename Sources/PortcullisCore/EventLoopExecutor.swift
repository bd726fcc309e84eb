import NIOCore

/// A task executor that runs jobs on the event loops of `group`, preferring the loop it is
/// called from (so a request's work stays on the thread that does its I/O).
///
/// Why it exists: with NIO installed as the global executor, NIO runs each job with its event
/// loop as the job's *serial* executor, so every call into a nonisolated async function (which
/// runs on the generic executor) must switch executors: the runtime enqueues the task again.
/// Measured on the core path (bench/profile.sh with uprobes on the runtime): ~85 such jobs per
/// request. A job run by a task executor runs on the generic executor, so those calls continue
/// in place; only real suspensions (I/O, locks) enqueue. Child tasks inherit the preference,
/// so wrapping the server's service group in `withTaskExecutorPreference` covers every request.
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    private let group: any EventLoopGroup

    public init(group: any EventLoopGroup) {
        self.group = group
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        group.any().execute { job.runSynchronously(on: executor) }
    }
}
