//! Regular expressions of `subscribed_topic_regex` (KIP-848: RE2/J syntax, whole-name match).
//!
//! A small RE2-style engine so the broker needs no regex dependency: the pattern compiles to
//! a program for a Pike VM, which matches in time linear in name length times program size,
//! whatever the pattern (no backtracking blow-up on hostile input). Supported: literals and
//! escapes, `.`, classes (`[a-z_]`, `[^.]`, `\d \w \s` and their negations), groups `( )`
//! and `(?: )`, alternation, `* + ?` (lazy forms too) and `{n}`, `{n,}`, `{n,m}`, anchors
//! `^ $`. Anything else (backreferences, look-around, flags) is refused as invalid.

/// Longest pattern accepted (bytes).
pub const MAX_PATTERN_LEN: usize = 1024;
/// Largest compiled program: bounds what counted repetitions may expand to.
const MAX_PROGRAM_LEN: usize = 20_000;
/// Largest `{n,m}` bound.
const MAX_REPEAT: u32 = 1000;

/// A compiled topic-name pattern.
#[derive(Debug, Clone)]
pub struct TopicRegex {
    program: Vec<Inst>,
}

/// Why a pattern was refused; the text goes into INVALID_REGULAR_EXPRESSION's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegexError(String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Empty,
    Class(Class),
    Start,
    End,
    Concat(Vec<Node>),
    Alternate(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// A set of characters as inclusive ranges, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    ranges: Vec<(char, char)>,
    negated: bool,
}

impl Class {
    fn one(c: char) -> Self {
        Self {
            ranges: vec![(c, c)],
            negated: false,
        }
    }
    fn any() -> Self {
        Self {
            ranges: vec![],
            negated: true,
        }
    }
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != self.negated
    }
}

#[derive(Debug, Clone)]
enum Inst {
    Char(Class),
    Split(usize, usize),
    Jump(usize),
    AssertStart,
    AssertEnd,
    Match,
}

impl TopicRegex {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Self, RegexError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(RegexError(format!("longer than {MAX_PATTERN_LEN} bytes")));
        }
        let mut parser = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
        };
        let node = parser.alternation(0)?;
        if parser.pos < parser.chars.len() {
            return Err(RegexError(format!("unmatched ')' at {}", parser.pos)));
        }
        let mut program = Vec::new();
        compile(&node, &mut program)?;
        program.push(Inst::Match);
        Ok(Self { program })
    }

    /// Whether the whole of `name` matches (Java's `Matcher.matches`).
    pub fn matches(&self, name: &str) -> bool {
        let len = self.program.len();
        let mut current = Threads::new(len);
        let mut next = Threads::new(len);
        let count = name.chars().count();
        self.add(&mut current, 0, 0, count);
        for (index, c) in name.chars().enumerate() {
            if current.list.is_empty() {
                return false;
            }
            next.clear();
            for i in 0..current.list.len() {
                let pc = current.list[i];
                if let Some(Inst::Char(class)) = self.program.get(pc) {
                    if class.matches(c) {
                        self.add(&mut next, pc + 1, index + 1, count);
                    }
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        current
            .list
            .iter()
            .any(|pc| matches!(self.program.get(*pc), Some(Inst::Match)))
    }

    /// Adds the thread at `pc` and everything reachable from it without consuming input.
    fn add(&self, threads: &mut Threads, pc: usize, at: usize, len: usize) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if !threads.insert(pc) {
                continue;
            }
            match self.program.get(pc) {
                Some(Inst::Jump(to)) => stack.push(*to),
                Some(Inst::Split(a, b)) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Some(Inst::AssertStart) if at == 0 => stack.push(pc + 1),
                Some(Inst::AssertEnd) if at == len => stack.push(pc + 1),
                _ => {}
            }
        }
    }
}

/// A sparse set of program counters, in insertion order.
struct Threads {
    list: Vec<usize>,
    seen: Vec<bool>,
}

impl Threads {
    fn new(len: usize) -> Self {
        Self {
            list: Vec::new(),
            seen: vec![false; len],
        }
    }
    fn insert(&mut self, pc: usize) -> bool {
        match self.seen.get_mut(pc) {
            Some(seen) if !*seen => {
                *seen = true;
                self.list.push(pc);
                true
            }
            _ => false,
        }
    }
    fn clear(&mut self) {
        for pc in self.list.drain(..) {
            if let Some(seen) = self.seen.get_mut(pc) {
                *seen = false;
            }
        }
    }
}

fn compile(node: &Node, program: &mut Vec<Inst>) -> Result<(), RegexError> {
    if program.len() > MAX_PROGRAM_LEN {
        return Err(RegexError("the pattern is too complex".into()));
    }
    match node {
        Node::Empty => {}
        Node::Class(class) => program.push(Inst::Char(class.clone())),
        Node::Start => program.push(Inst::AssertStart),
        Node::End => program.push(Inst::AssertEnd),
        Node::Concat(nodes) => {
            for n in nodes {
                compile(n, program)?;
            }
        }
        Node::Alternate(nodes) => {
            // split L1, next; L1: a; jmp end; next: split L2, ...; last: z; end:
            let mut jumps = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                if i + 1 < nodes.len() {
                    let split = program.len();
                    program.push(Inst::Split(split + 1, 0));
                    compile(n, program)?;
                    jumps.push(program.len());
                    program.push(Inst::Jump(0));
                    let next = program.len();
                    program[split] = Inst::Split(split + 1, next);
                } else {
                    compile(n, program)?;
                }
            }
            let end = program.len();
            for j in jumps {
                program[j] = Inst::Jump(end);
            }
        }
        Node::Repeat { node, min, max } => {
            for _ in 0..*min {
                compile(node, program)?;
            }
            match max {
                None => {
                    // L: split body, out; body; jmp L; out:
                    let split = program.len();
                    program.push(Inst::Split(split + 1, 0));
                    compile(node, program)?;
                    program.push(Inst::Jump(split));
                    let out = program.len();
                    program[split] = Inst::Split(split + 1, out);
                }
                Some(max) => {
                    // (body)? repeated max - min times, each optional.
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(program.len());
                        program.push(Inst::Split(program.len() + 1, 0));
                        compile(node, program)?;
                    }
                    let out = program.len();
                    for s in splits {
                        program[s] = Inst::Split(s + 1, out);
                    }
                }
            }
        }
    }
    if program.len() > MAX_PROGRAM_LEN {
        return Err(RegexError("the pattern is too complex".into()));
    }
    Ok(())
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error<T>(&self, what: &str) -> Result<T, RegexError> {
        Err(RegexError(format!("{what} at index {}", self.pos)))
    }

    fn alternation(&mut self, depth: usize) -> Result<Node, RegexError> {
        if depth > 100 {
            return self.error("groups nested too deeply");
        }
        let mut branches = vec![self.concatenation(depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.concatenation(depth)?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alternate(branches)
        })
    }

    fn concatenation(&mut self, depth: usize) -> Result<Node, RegexError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom(depth)?;
            let atom = self.quantified(atom)?;
            items.push(atom);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    fn atom(&mut self, depth: usize) -> Result<Node, RegexError> {
        let Some(c) = self.peek() else {
            return self.error("unexpected end");
        };
        self.pos += 1;
        match c {
            '.' => Ok(Node::Class(Class::any())),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '(' => {
                if self.peek() == Some('?') {
                    if self.chars.get(self.pos + 1) == Some(&':') {
                        self.pos += 2;
                    } else {
                        return self.error("unsupported group flag");
                    }
                }
                let inner = self.alternation(depth + 1)?;
                if self.peek() != Some(')') {
                    return self.error("missing ')'");
                }
                self.pos += 1;
                Ok(inner)
            }
            '[' => self.class(),
            '\\' => self.escape(false).map(Node::Class),
            '*' | '+' | '?' | '{' => self.error("dangling quantifier"),
            c => Ok(Node::Class(Class::one(c))),
        }
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, RegexError> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                let start = self.pos;
                self.pos += 1;
                let min = self.number()?;
                let max = if self.peek() == Some(',') {
                    self.pos += 1;
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(self.number()?)
                    }
                } else {
                    Some(min)
                };
                if self.peek() != Some('}') {
                    self.pos = start;
                    return self.error("malformed repetition");
                }
                if max.is_some_and(|max| max < min) {
                    return self.error("repetition bounds out of order");
                }
                (min, max)
            }
            _ => return Ok(atom),
        };
        self.pos += 1;
        if self.peek() == Some('?') {
            self.pos += 1; // lazy: the same set of whole-name matches
        }
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return self.error("nested quantifier");
        }
        if matches!(atom, Node::Start | Node::End) {
            return Ok(atom);
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn number(&mut self) -> Result<u32, RegexError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(n),
            Ok(_) => self.error("repetition count too large"),
            Err(_) => self.error("expected a number"),
        }
    }

    /// After a backslash; `in_class` allows only what makes sense inside `[...]`.
    fn escape(&mut self, in_class: bool) -> Result<Class, RegexError> {
        let Some(c) = self.peek() else {
            return self.error("trailing backslash");
        };
        self.pos += 1;
        let digits = vec![('0', '9')];
        let word = vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
        let space = vec![('\t', '\r'), (' ', ' ')];
        Ok(match c {
            'd' => Class {
                ranges: digits,
                negated: false,
            },
            'D' => Class {
                ranges: digits,
                negated: true,
            },
            'w' => Class {
                ranges: word,
                negated: false,
            },
            'W' => Class {
                ranges: word,
                negated: true,
            },
            's' => Class {
                ranges: space,
                negated: false,
            },
            'S' => Class {
                ranges: space,
                negated: true,
            },
            't' => Class::one('\t'),
            'n' => Class::one('\n'),
            'r' => Class::one('\r'),
            c if !c.is_ascii_alphanumeric() => Class::one(c),
            _ if in_class => return self.error("unsupported escape in class"),
            _ => return self.error("unsupported escape"),
        })
    }

    /// After `[`.
    fn class(&mut self) -> Result<Node, RegexError> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return self.error("missing ']'");
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            self.pos += 1;
            let lo = if c == '\\' {
                let class = self.escape(true)?;
                match class.ranges.as_slice() {
                    [(a, b)] if a == b && !class.negated => *a,
                    _ if class.negated => return self.error("negated escape in class"),
                    _ => {
                        ranges.extend(class.ranges);
                        continue;
                    }
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|n| *n != ']') {
                self.pos += 1;
                let Some(mut hi) = self.peek() else {
                    return self.error("missing ']'");
                };
                self.pos += 1;
                if hi == '\\' {
                    let class = self.escape(true)?;
                    match class.ranges.as_slice() {
                        [(a, b)] if a == b && !class.negated => hi = *a,
                        _ => return self.error("bad range"),
                    }
                }
                if hi < lo {
                    return self.error("range out of order");
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class(Class { ranges, negated }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        TopicRegex::new(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .matches(name)
    }

    #[test]
    fn whole_name_matches() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders2"));
        assert!(!m("order", "orders"));
        assert!(m("orders.*", "orders-eu"));
        assert!(m("orders.*", "orders"));
        assert!(m("^orders-.+$", "orders-eu"));
        assert!(!m("^orders-.+$", "orders-"));
        assert!(m("a|b|cd", "cd"));
        assert!(!m("a|b|cd", "c"));
        assert!(m("(foo|bar)-[0-9]+", "bar-17"));
        assert!(!m("(foo|bar)-[0-9]+", "bar-"));
        assert!(m("(?:ab)*c", "ababc"));
        assert!(m("x{2,3}", "xxx"));
        assert!(!m("x{2,3}", "xxxx"));
        assert!(!m("x{2,3}", "x"));
        assert!(m("x{2}", "xx"));
        assert!(m("x{2,}", "xxxxx"));
        assert!(m("colou?r", "color"));
        assert!(m("[^.]+\\.events", "shop.events"));
        assert!(!m("[^.]+\\.events", "a.b.events"));
        assert!(m("\\w+_\\d{2}", "topic_42"));
        assert!(m("[a-c_\\-]+", "a-b_c"));
        assert!(m("t.*?", "topic"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a*", ""));
    }

    #[test]
    fn refuses_what_it_does_not_support_or_cannot_parse() {
        for bad in [
            "(", "a)", "[a", "*a", "a**", "(?i)a", "\\1", "x{3,2}", "x{5000}", "[z-a]", "\\",
        ] {
            assert!(TopicRegex::new(bad).is_err(), "{bad} accepted");
        }
        assert!(TopicRegex::new(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
        assert!(TopicRegex::new("((a{1000}){1000}){1000}").is_err());
    }

    #[test]
    fn hostile_patterns_stay_linear() {
        // Catastrophic for a backtracking engine; a handful of steps here.
        let r = TopicRegex::new("(a*)*(a|aa)*b").unwrap();
        assert!(!r.matches(&"a".repeat(200)));
        assert!(r.matches(&format!("{}b", "a".repeat(200))));
    }
}
