import Foundation
import PortcullisCore
import Synchronization
import Testing

@Suite("Deadlines and periodic loops")
struct PeriodicTests {
    @Test("a deadline returns the value in time, and past it throws, reports the expiry at once and leaves no task behind")
    func deadline() async throws {
        #expect(try await Deadline.run(within: .seconds(5)) { 42 } == 42)
        let expiredAt = Mutex<ContinuousClock.Instant?>(nil)
        let bodyEnded = Mutex<ContinuousClock.Instant?>(nil)
        let started = ContinuousClock.now
        await #expect(throws: DeadlineExceeded.self) {
            try await Deadline.run(within: .milliseconds(50), onExpiry: { expiredAt.withLock { $0 = .now } }) {
                // Ignores cancellation, as a hung call would.
                // Long beside the deadline, so that a machine busy with other suites still sees the difference.
                let end = ContinuousClock.now + .milliseconds(3000)
                while ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(10)) }
                bodyEnded.withLock { $0 = .now }
                return 0
            }
        }
        let expiry = try #require(expiredAt.withLock { $0 })
        let end = try #require(bodyEnded.withLock { $0 }, "the call returned only after its body had")
        #expect(expiry - started < .milliseconds(2500), "the expiry is reported at the deadline, not when the body ends")
        #expect(end > expiry)
    }

    @Test("a periodic loop ticks until cancelled, lets a tick under way finish, then runs its final step once")
    func periodic() async throws {
        let ticks = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        let finals = Atomic<Int>(0)
        let loop = Task {
            await Periodic.run(every: .milliseconds(20), startImmediately: true, {
                ticks.add(1, ordering: .relaxed)
                try? await Task.sleep(for: .milliseconds(30))   // not cancelled half-way: it runs in its own task
                finished.add(1, ordering: .relaxed)
            }, final: { finals.add(1, ordering: .relaxed) })
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while ticks.load(ordering: .relaxed) < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        loop.cancel()
        await loop.value
        #expect(ticks.load(ordering: .relaxed) >= 2)
        #expect(finished.load(ordering: .relaxed) == ticks.load(ordering: .relaxed), "every tick that started finished")
        #expect(finals.load(ordering: .relaxed) == 1)
    }
}
