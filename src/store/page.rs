use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 1000;
const TOKEN_VERSION: &str = "v1";

/// A validated list request: how many rows, and after which id (keyset pagination over ids,
/// which are UUIDv7 and so sort in creation order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u64,
    pub after: Option<String>,
}

/// Why a page request was refused; the field it names is the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequestError {
    pub field: &'static str,
    pub description: String,
}

impl PageRequest {
    /// Reads `page_size` (0 → 50, at most 1000) and `page_token` (empty or one we issued).
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, PageRequestError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                return Err(PageRequestError { field: "page_size", description: "must not be negative".into() });
            }
            n => u64::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() { None } else { Some(decode_token(page_token)?) };
        Ok(PageRequest { size, after })
    }
}

fn decode_token(token: &str) -> Result<String, PageRequestError> {
    let invalid = || PageRequestError {
        field: "page_token",
        description: "is not a token returned by this list; start again without it".into(),
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    match text.split_once(':') {
        Some((TOKEN_VERSION, id)) if crate::domain::is_valid_id(id) => Ok(id.to_owned()),
        _ => Err(invalid()),
    }
}

/// One page of rows and the token for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// Builds a page from up to `request.size + 1` rows: the extra row only says there is more.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, id_of: impl Fn(&T) -> &str) -> Self {
        let size = usize::try_from(request.size).unwrap_or(usize::MAX);
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|last| URL_SAFE_NO_PAD.encode(format!("{TOKEN_VERSION}:{}", id_of(last))))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Page { items: rows, next_page_token }
    }

    /// Converts every item, keeping the token.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_page_token: self.next_page_token }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(PageRequest::parse(0, "").unwrap().size, 50);
        assert_eq!(PageRequest::parse(5000, "").unwrap().size, 1000);
        assert_eq!(PageRequest::parse(-1, "").unwrap_err().field, "page_size");
    }

    #[test]
    fn tokens_round_trip_and_reject_junk() {
        let id = crate::domain::new_id();
        let request = PageRequest { size: 1, after: None };
        let page = Page::from_rows(vec![id.clone(), crate::domain::new_id()], &request, |s| s);
        assert_eq!(page.items, vec![id.clone()]);
        assert_eq!(PageRequest::parse(1, &page.next_page_token).unwrap().after, Some(id));
        assert_eq!(PageRequest::parse(1, "garbage!").unwrap_err().field, "page_token");
        assert_eq!(PageRequest::parse(1, &URL_SAFE_NO_PAD.encode("v1:not-an-id")).unwrap_err().field, "page_token");
    }
}
