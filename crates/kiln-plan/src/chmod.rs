//! `--chmod`: an octal mode, or symbolic clauses like chmod(1)'s (`u+x,go-w`, `a=rX`,
//! `u+x-w`). One parser, used both to check a recipe and to apply the mode.

/// One operation of a clause: `+`, `-` or `=` with its permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    op: char,
    /// Bits before `X` is decided.
    bits: u32,
    /// `X`: execute only for directories or files that already have an execute bit.
    conditional_x: bool,
}

/// One comma-separated clause: who it is for and its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who_mask: u32,
    operations: Vec<Operation>,
}

/// A `--chmod` value, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode such as `0755`.
    Octal(u32),
    /// Symbolic clauses such as `u+x,go-w`.
    Symbolic(Vec<Clause>),
}

impl Chmod {
    /// Parses an octal or symbolic mode, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!("invalid --chmod {text:?}: use an octal mode such as 0755 or symbolic such as u+x,go-w")
        };
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| format!("invalid --chmod {text:?}: octal modes go up to 7777"));
        }
        if text.is_empty() {
            return Err(invalid());
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let who_end = clause.find(['+', '-', '=']).ok_or_else(invalid)?;
            let (who, mut rest) = clause.split_at(who_end);
            let mut who_mask = 0;
            for c in who.chars() {
                who_mask |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(invalid()),
                };
            }
            if who.is_empty() {
                who_mask = 0o7777;
            }
            let mut operations = Vec::new();
            while let Some(op) = rest.chars().next().filter(|c| matches!(c, '+' | '-' | '=')) {
                rest = &rest[1..];
                let perms_end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
                let (perms, tail) = rest.split_at(perms_end);
                rest = tail;
                let mut operation = Operation {
                    op,
                    bits: 0,
                    conditional_x: false,
                };
                for c in perms.chars() {
                    match c {
                        'r' => operation.bits |= 0o444,
                        'w' => operation.bits |= 0o222,
                        'x' => operation.bits |= 0o111,
                        'X' => operation.conditional_x = true,
                        's' => operation.bits |= 0o6000,
                        't' => operation.bits |= 0o1000,
                        _ => return Err(invalid()),
                    }
                }
                operations.push(operation);
            }
            if operations.is_empty() || !rest.is_empty() {
                return Err(invalid());
            }
            clauses.push(Clause {
                who_mask,
                operations,
            });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The permission bits for an entry whose current bits are `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(bits) => return *bits,
            Chmod::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for operation in &clause.operations {
                let mut bits = operation.bits;
                if operation.conditional_x && (is_dir || mode & 0o111 != 0) {
                    bits |= 0o111;
                }
                let bits = bits & clause.who_mask;
                mode = match operation.op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !clause.who_mask) | bits,
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, mode: u32, is_dir: bool) -> u32 {
        Chmod::parse(text).unwrap().apply(mode, is_dir)
    }

    #[test]
    fn octal_and_symbolic_modes() {
        assert_eq!(apply("0755", 0o600, false), 0o755);
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-r", 0o644, false), 0o600);
        assert_eq!(apply("a=rX", 0o700, true), 0o555);
        assert_eq!(apply("a+X", 0o644, false), 0o644);
        assert_eq!(
            apply("u+x-w", 0o644, false),
            0o544,
            "every operation of a clause applies"
        );
        assert_eq!(apply("u=rw,go=r", 0o777, false), 0o644);
        assert_eq!(apply("+t", 0o755, true), 0o1755);
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in ["8888", "u+q", "", "q+x", "u", "u+x,", "77777"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }
}
