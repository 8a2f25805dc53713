//! The popularity forecast feed (`outpost control-plane import forecast.json`): per country, an
//! ordered title list with expected views per popularity window. Importing a feed replaces the
//! forecast of every country it lists and leaves the others alone.
//!
//! ```json
//! {"forecast": [
//!   {"country": "NZ", "titles": [{"title": "new-film", "views": 1200}, {"title": "old", "views": 40}]}
//! ]}
//! ```
//!
//! Rules (each error names the field, e.g. `forecast[0].titles[1].views`): countries are ISO
//! 3166-1 alpha-2 and listed once; title ids are valid path segments, once per country; views
//! are finite and >= 0 and never increase down a country's list (it is ordered); at most
//! [`MAX_TITLES_PER_COUNTRY`] titles per country. Titles not imported yet are kept: they count
//! once they are imported.

use std::collections::HashSet;

use protocol::catalog::is_valid_segment;
use serde::Deserialize;

use crate::db::ForecastRow;
use crate::Error;

/// Most titles one country's list may hold.
pub const MAX_TITLES_PER_COUNTRY: usize = 100_000;

/// The feed document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastFeed {
    /// One entry per country.
    pub forecast: Vec<CountryForecast>,
}

/// One country's ordered list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryForecast {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Most watched first.
    pub titles: Vec<ForecastTitle>,
}

/// One title's expected views.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastTitle {
    /// Title id.
    pub title: String,
    /// Expected views per popularity window.
    pub views: f64,
}

impl ForecastFeed {
    /// Parses JSON; serde errors name the key.
    pub fn parse(text: &str, file: &str) -> Result<ForecastFeed, Error> {
        serde_json::from_str(text).map_err(|e| Error::import(file, "", e.to_string()))
    }

    /// Validates into rows; returns the countries replaced and the rows.
    pub fn to_rows(&self, file: &str) -> Result<(Vec<String>, Vec<ForecastRow>), Error> {
        let bad = |field: String, reason: String| Error::import(file, field, reason);
        let mut countries = Vec::new();
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        for (i, c) in self.forecast.iter().enumerate() {
            if c.country.len() != 2 || !c.country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(bad(
                    format!("forecast[{i}].country"),
                    format!("{:?} must be an ISO 3166-1 alpha-2 code like NZ", c.country),
                ));
            }
            if !seen.insert(c.country.clone()) {
                return Err(bad(
                    format!("forecast[{i}].country"),
                    format!("{} is listed twice", c.country),
                ));
            }
            if c.titles.len() > MAX_TITLES_PER_COUNTRY {
                return Err(bad(
                    format!("forecast[{i}].titles"),
                    format!("more than {MAX_TITLES_PER_COUNTRY} titles"),
                ));
            }
            let mut titles = HashSet::new();
            let mut last = f64::INFINITY;
            for (j, t) in c.titles.iter().enumerate() {
                if !is_valid_segment(&t.title) {
                    return Err(bad(
                        format!("forecast[{i}].titles[{j}].title"),
                        format!("{:?} is not a valid title id", t.title),
                    ));
                }
                if !titles.insert(t.title.as_str()) {
                    return Err(bad(
                        format!("forecast[{i}].titles[{j}].title"),
                        format!("{} is listed twice for {}", t.title, c.country),
                    ));
                }
                if !t.views.is_finite() || t.views < 0.0 {
                    return Err(bad(
                        format!("forecast[{i}].titles[{j}].views"),
                        "must be a finite number >= 0".into(),
                    ));
                }
                if t.views > last {
                    return Err(bad(
                        format!("forecast[{i}].titles[{j}].views"),
                        format!(
                            "{} is more than the previous title's {last}: the list is ordered, most watched first",
                            t.views
                        ),
                    ));
                }
                last = t.views;
                rows.push(ForecastRow {
                    country: c.country.clone(),
                    title: t.title.clone(),
                    position: j as i64,
                    views: t.views,
                });
            }
            countries.push(c.country.clone());
        }
        Ok((countries, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> String {
        match ForecastFeed::parse(text, "f.json").and_then(|f| f.to_rows("f.json")) {
            Err(Error::Import { field, reason, .. }) => format!("{field}: {reason}"),
            other => panic!("expected an import error, got {other:?}"),
        }
    }

    #[test]
    fn valid_feed_becomes_ordered_rows() {
        let f = ForecastFeed::parse(
            r#"{"forecast":[{"country":"NZ","titles":[{"title":"a","views":10},{"title":"b","views":10},{"title":"c","views":0}]},{"country":"AU","titles":[]}]}"#,
            "f.json",
        )
        .unwrap();
        let (countries, rows) = f.to_rows("f.json").unwrap();
        assert_eq!(countries, ["NZ", "AU"]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].position, 2);
        assert_eq!(rows[2].title, "c");
    }

    #[test]
    fn errors_name_the_field() {
        assert!(field(r#"{"forecast":[{"country":"nz","titles":[]}]}"#)
            .starts_with("forecast[0].country"));
        assert!(field(
            r#"{"forecast":[{"country":"NZ","titles":[]},{"country":"NZ","titles":[]}]}"#
        )
        .starts_with("forecast[1].country"));
        assert!(
            field(r#"{"forecast":[{"country":"NZ","titles":[{"title":"../x","views":1}]}]}"#)
                .starts_with("forecast[0].titles[0].title")
        );
        assert!(field(
            r#"{"forecast":[{"country":"NZ","titles":[{"title":"a","views":1},{"title":"a","views":1}]}]}"#
        )
        .starts_with("forecast[0].titles[1].title"));
        assert!(
            field(r#"{"forecast":[{"country":"NZ","titles":[{"title":"a","views":-1}]}]}"#)
                .starts_with("forecast[0].titles[0].views")
        );
        let e = field(
            r#"{"forecast":[{"country":"NZ","titles":[{"title":"a","views":1},{"title":"b","views":5}]}]}"#,
        );
        assert!(
            e.starts_with("forecast[0].titles[1].views") && e.contains("ordered"),
            "{e}"
        );
        // Unknown keys are refused by name.
        match ForecastFeed::parse(
            r#"{"forecast":[{"country":"NZ","titles":[{"title":"a","veiws":1}]}]}"#,
            "f.json",
        ) {
            Err(e) => assert!(e.to_string().contains("veiws"), "{e}"),
            Ok(_) => panic!("unknown key accepted"),
        }
    }
}
