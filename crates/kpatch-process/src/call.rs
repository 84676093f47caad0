//! Functions called in a stopped thread (IFUNC resolvers): the call returns to an address
//! that faults, and the fault is intercepted before it is delivered. All registers and the
//! floating-point/vector state are put back afterwards.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::maps::MapEntry;
use crate::memory::Memory;
use crate::ptrace::{self, Event};
use crate::thread::ThreadHandle;
use crate::tracee::SavedSignal;

/// Bytes below the stack pointer left untouched: the x86_64 ABI's red zone (other ABIs have
/// none and lose nothing).
pub const RED_ZONE: u64 = 128;
/// Where a called function returns to: page 0, never mapped (it lies below `mmap_min_addr`).
pub const CALL_RETURN_ADDRESS: u64 = 0;

impl ThreadHandle<'_> {
    /// Calls the function at `func` with up to 6 integer arguments and returns its integer
    /// result. The call runs on the thread's stack below the red zone and returns to
    /// [`CALL_RETURN_ADDRESS`], where the fault is intercepted and never delivered. If the
    /// function faults, or does not return within `timeout`, the thread is restored and the
    /// call reported as failed (whatever the function did to memory or locks stays done).
    pub fn call(&mut self, func: u64, args: &[u64], timeout: Duration) -> Result<u64> {
        self.call_with_block(func, args, &[], timeout)
    }

    /// Like [`ThreadHandle::call`], with a copy of `block` put on the thread's stack (below the
    /// red zone, 16-byte aligned) and its address passed after `args` when `block` is not
    /// empty: the way glibc hands an aarch64 IFUNC resolver its `__ifunc_arg_t`.
    pub fn call_with_block(
        &mut self,
        func: u64,
        args: &[u64],
        block: &[u8],
        timeout: Duration,
    ) -> Result<u64> {
        let nargs = args.len() + usize::from(!block.is_empty());
        if nargs > 6 {
            return Err(Error::InvalidArgument(format!(
                "remote call of {func:#x}: {nargs} arguments given, at most 6 allowed"
            )));
        }
        let ret_addr = CALL_RETURN_ADDRESS;
        let maps = self.process.maps()?;
        if maps.iter().any(|m: &MapEntry| m.contains(ret_addr)) {
            return Err(Error::InvalidArgument(format!(
                "pid {}: address {ret_addr:#x} is mapped, a remote call could not be caught returning",
                self.pid()
            )));
        }
        let layout = self.layout();
        let mut saved = self.save(true)?;
        let mut regs = saved.regs.clone();
        // ABI: the stack is 16-byte aligned at the call, i.e. before the return address is
        // pushed (x86_64) or with the return address in the link register (aarch64).
        let mut sp = regs[layout.sp].wrapping_sub(RED_ZONE) & !0xf;
        let mut args = args.to_vec();
        if !block.is_empty() {
            sp = sp.wrapping_sub(block.len() as u64) & !0xf;
            self.process.write(sp, block)?;
            args.push(sp);
        }
        match layout.link {
            Some(lr) => regs[lr] = ret_addr,
            None => {
                sp -= 8;
                self.process.write_u64(sp, ret_addr)?;
            }
        }
        regs[layout.sp] = sp;
        regs[layout.pc] = func;
        for (&reg, &arg) in layout.call_args.iter().zip(&args) {
            regs[reg] = arg;
        }
        if !layout.call_args.contains(&layout.ret) {
            // x86_64 variadic convention: %al = number of vector registers used.
            regs[layout.ret] = 0;
        }
        let deadline = Instant::now() + timeout;
        let outcome = self
            .unblock(libc::SIGSEGV, &mut saved)
            .and_then(|()| self.enter(regs, &saved))
            .and_then(|()| self.run_call(func, ret_addr, deadline, timeout));
        let restored = self.restore(&saved);
        let value = outcome?;
        restored?;
        Ok(value)
    }

    fn run_call(
        &mut self,
        func: u64,
        ret_addr: u64,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<u64> {
        let layout = self.layout();
        loop {
            ptrace::cont(self.tid(), 0).map_err(|e| self.ptrace_err("CONT", e))?;
            let Some(event) = self.wait(deadline, "a remote call")? else {
                self.recover(|sig, pc| sig == libc::SIGSEGV && pc == ret_addr)?;
                return Err(Error::RemoteTimeout {
                    pid: self.pid(),
                    tid: self.tid(),
                    what: format!("call of {func:#x}"),
                    timeout,
                });
            };
            let Event::Signal(sig) = event else {
                // A group-stop or an interrupt: keep the call going.
                continue;
            };
            let regs = self.regs()?;
            let pc = regs[layout.pc];
            if sig == libc::SIGSEGV && pc == ret_addr {
                return Ok(regs[layout.ret]);
            }
            let info = ptrace::siginfo(self.tid()).map_err(|e| self.ptrace_err("GETSIGINFO", e))?;
            if is_fault(sig, info.si_code) {
                // SAFETY: for the fault signals accepted by is_fault, the kernel filled the
                // si_addr member of the union.
                let addr = unsafe { info.si_addr() } as u64;
                return Err(Error::CallFault {
                    pid: self.pid(),
                    tid: self.tid(),
                    func,
                    signal: sig,
                    pc,
                    addr,
                });
            }
            self.tracee.saved.push(SavedSignal::new(&info));
        }
    }
}

/// A signal the kernel raised because of what the instruction stream did.
fn is_fault(sig: i32, code: i32) -> bool {
    matches!(
        sig,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGSYS
    ) && code > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_signals_are_kernel_raised_ones() {
        assert!(is_fault(libc::SIGSEGV, 1));
        assert!(is_fault(libc::SIGBUS, 0x80));
        assert!(!is_fault(libc::SIGSEGV, 0)); // kill()
        assert!(!is_fault(libc::SIGSEGV, libc::SI_TKILL));
        assert!(!is_fault(libc::SIGUSR1, 1));
    }
}
