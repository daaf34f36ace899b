//! The structure of query text, checked before the engine parses it.
//!
//! The engine's forgiving grammar repairs what it cannot read: an unclosed
//! parenthesis is closed, an `AND` with nothing before it is dropped, and
//! a query left with no positive term matches every document. That turns
//! text like `AND OR (((` into "everything, score 0" plus a list of
//! engine-internal warnings. This check finds those mistakes first and
//! names them by column, so the user gets one clear error instead.
//!
//! It looks only at what the engine's grammar treats as structure:
//! parentheses and double quotes (outside quotes, `\` escapes the next
//! character) and the operator keywords `AND`, `OR` (which need a term on
//! each side) and `NOT` (which needs one after it). Everything else,
//! `c++`, `what's this?`, `foo-bar`, `-legacy`, is a term.

use crate::error::{MissingSide, QueryProblem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// A word, a phrase or a field-qualified term (column).
    Term,
    /// `AND` or `OR`.
    Binary(&'static str, usize),
    /// `NOT`.
    Not(usize),
    Open,
    Close,
}

/// The structural problems of `text`, in column order (none when it is
/// well formed).
pub(crate) fn check(text: &str) -> Vec<QueryProblem> {
    let mut problems = Vec::new();
    let mut items = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut quote: Option<usize> = None;
    let mut escaped = false;
    // The current term: its first column and text.
    let mut term: Option<(usize, String)> = None;
    let finish = |term: &mut Option<(usize, String)>, items: &mut Vec<Item>| {
        if let Some((column, word)) = term.take() {
            items.push(match word.as_str() {
                "AND" => Item::Binary("AND", column),
                "OR" => Item::Binary("OR", column),
                "NOT" => Item::Not(column),
                _ => Item::Term,
            });
        }
    };
    for (i, c) in text.chars().enumerate() {
        let column = i + 1;
        if escaped {
            escaped = false;
            if let Some((_, w)) = term.as_mut() {
                w.push(c);
            }
            continue;
        }
        if quote.is_some() {
            match c {
                '\\' => escaped = true,
                '"' => quote = None,
                _ => {}
            }
            if let Some((_, w)) = term.as_mut() {
                w.push(c);
            }
            continue;
        }
        match c {
            '(' => {
                finish(&mut term, &mut items);
                open.push(column);
                items.push(Item::Open);
            }
            ')' => {
                finish(&mut term, &mut items);
                if open.pop().is_none() {
                    problems.push(QueryProblem::UnopenedParenthesis { column });
                }
                items.push(Item::Close);
            }
            c if c.is_whitespace() => finish(&mut term, &mut items),
            c => {
                let (_, w) = term.get_or_insert_with(|| (column, String::new()));
                w.push(c);
                match c {
                    '\\' => escaped = true,
                    '"' => quote = Some(column),
                    _ => {}
                }
            }
        }
    }
    finish(&mut term, &mut items);
    if let Some(column) = quote {
        problems.push(QueryProblem::UnclosedQuote { column });
    }
    // A term on the left of a binary operator: a term or a closed group.
    let left_ok = |i: usize| i > 0 && matches!(items[i - 1], Item::Term | Item::Close);
    // A term on the right: a term, a group, or a negated term.
    let right_ok = |i: usize| {
        matches!(
            items.get(i + 1),
            Some(Item::Term | Item::Open | Item::Not(_))
        )
    };
    for (i, item) in items.iter().enumerate() {
        let missing = match *item {
            Item::Binary(operator, column) => match (left_ok(i), right_ok(i)) {
                (true, true) => None,
                (false, true) => Some((operator, column, MissingSide::Before)),
                (true, false) => Some((operator, column, MissingSide::After)),
                (false, false) => Some((operator, column, MissingSide::Both)),
            },
            Item::Not(column) => {
                let after = matches!(items.get(i + 1), Some(Item::Term | Item::Open));
                (!after).then_some(("NOT", column, MissingSide::After))
            }
            _ => None,
        };
        if let Some((operator, column, side)) = missing {
            problems.push(QueryProblem::MissingOperand {
                operator,
                column,
                side,
            });
        }
    }
    if !open.is_empty() {
        problems.push(QueryProblem::UnclosedParentheses { columns: open });
    }
    problems.sort_by_key(first_column);
    problems
}

fn first_column(p: &QueryProblem) -> usize {
    match p {
        QueryProblem::UnclosedParentheses { columns } => columns.first().copied().unwrap_or(0),
        QueryProblem::UnopenedParenthesis { column }
        | QueryProblem::UnclosedQuote { column }
        | QueryProblem::MissingOperand { column, .. } => *column,
        QueryProblem::UnknownField { .. } | QueryProblem::Syntax(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> Vec<String> {
        check(text).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn ordinary_text_has_no_problems() {
        for text in [
            "c++ token",
            "what's this?",
            "foo-bar",
            "\"a phrase\"",
            "refresh AND token",
            "-legacy",
            "a OR b AND c",
            "alpha NOT beta",
            "NOT beta",
            "(a OR b) AND NOT (c)",
            "summary:\"x (y\"",
            r"\(literal",
            "AND\\ OR",
            "ANDROID ORacle NOTE",
            "a AND -b",
            "",
        ] {
            assert_eq!(shown(text), Vec::<String>::new(), "{text:?}");
        }
    }

    #[test]
    fn structural_mistakes_are_named_by_column() {
        assert_eq!(
            shown("AND OR ((("),
            [
                "`AND` at column 1 has no term on either side",
                "`OR` at column 5 has no term before it",
                "3 parentheses are never closed (at columns 8, 9, 10)",
            ]
        );
        assert_eq!(shown("a OR"), ["`OR` at column 3 has no term after it"]);
        assert_eq!(shown("AND a"), ["`AND` at column 1 has no term before it"]);
        assert_eq!(shown("a NOT"), ["`NOT` at column 3 has no term after it"]);
        assert_eq!(
            shown("a (b"),
            ["the parenthesis at column 3 is never closed"]
        );
        assert_eq!(shown("a) b"), ["`)` at column 2 closes no parenthesis"]);
        assert_eq!(shown("say \"hi"), ["the quote at column 5 is never closed"]);
        assert_eq!(
            shown("(a AND) OR b"),
            ["`AND` at column 4 has no term after it"]
        );
        // Columns count characters, not bytes.
        assert_eq!(shown("été OR"), ["`OR` at column 5 has no term after it"]);
    }
}
