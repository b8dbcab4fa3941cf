//! Cursor pagination: `limit` 1–100 and an opaque cursor naming the last item seen.

use crate::error::{AppError, AppResult, FieldError};

pub const DEFAULT_LIMIT: u64 = 20;
pub const MAX_LIMIT: u64 = 100;

#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u64,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl PageRequest {
    pub fn new(limit: Option<i64>, cursor: Option<String>) -> AppResult<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT as i64);
        if !(1..=MAX_LIMIT as i64).contains(&limit) {
            return Err(AppError::Validation(vec![FieldError::new(
                "limit",
                "must be between 1 and 100",
            )]));
        }
        Ok(Self {
            limit: limit as u64,
            cursor: cursor.filter(|c| !c.is_empty()),
        })
    }

    /// Decodes the cursor with `parse`, refusing one this API did not hand out.
    pub fn decode_cursor<T>(&self, parse: impl Fn(&str) -> Option<T>) -> AppResult<Option<T>> {
        match &self.cursor {
            None => Ok(None),
            Some(c) => parse(c).map(Some).ok_or_else(|| {
                AppError::Validation(vec![FieldError::new(
                    "cursor",
                    "is not a cursor from this list",
                )])
            }),
        }
    }

    /// Builds a page from up to `limit + 1` rows fetched: the extra row only says "more".
    pub fn page<R, T>(
        &self,
        mut rows: Vec<R>,
        cursor_of: impl Fn(&R) -> String,
        map: impl Fn(R) -> T,
    ) -> Page<T> {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(&cursor_of)
        } else {
            None
        };
        Page {
            data: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}
