//! Python's `random.Random(seed).sample`, bit for bit: lm-eval draws few-shot examples with it
//! (seed 1234, one generator per task, shared by its questions in order), so the same examples
//! come only from the same generator. MT19937 seeded by `init_by_array`, `_randbelow` by
//! rejection on `getrandbits`, and `sample`'s two strategies (a shrinking pool for small
//! populations, a set of picks for large ones), as CPython 3.11 writes them.

const N: usize = 624;
const M: usize = 397;

/// CPython's `random.Random`, as far as `sample` needs it.
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed below 2^64.
    pub fn new(seed: u64) -> Self {
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut r = PyRandom {
            mt: [0; N],
            index: N,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            for k in 0..N {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for `1 <= k <= 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)` for `1 <= n < 2^32`.
    fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// The indices `sample(range(n), k)` returns, in order. `k` must not exceed `n`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(3k, 4))
            let mut p = 1usize;
            while p < 3 * k {
                p *= 4;
            }
            setsize += p;
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while seen.contains(&j) {
                    j = self.randbelow(n);
                }
                seen.insert(j);
                out.push(j);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by CPython 3.11: `random.Random(1234).getrandbits(32)` twice, and
    /// `[r.sample(range(7473), 5) for _ in range(3)]` (gsm8k's train split has 7,473 records).
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(1234);
        assert_eq!(
            (r.getrandbits(32), r.getrandbits(32)),
            (4_150_886_329, 3_342_196_574)
        );
        let mut r = PyRandom::new(1234);
        let draws: Vec<Vec<usize>> = (0..3).map(|_| r.sample(7473, 5)).collect();
        assert_eq!(
            draws,
            [
                [6374, 3610, 957, 61, 742],
                [7462, 6610, 4769, 286, 5501],
                [5677, 687, 806, 6279, 2905]
            ]
        );
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(10, 5), [7, 1, 0, 9, 4]);
        assert_eq!(r.sample(10, 5), [0, 1, 8, 6, 2]);
    }
}
