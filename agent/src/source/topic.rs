//! MQTT topic filters mapped to a reading's sensor and metric.
//!
//! A [`TopicMap`] pairs a subscription filter with two templates, e.g. filter
//! `sensors/+/+`, sensor `{2}`, metric `{3}`: the topic `sensors/kitchen/temperature`
//! becomes the key `kitchen/temperature`. `{n}` is the topic's n-th level from 1,
//! `{-n}` the n-th from the end; any other text is kept as written. There is no
//! escape for braces: sensor and metric names have no use for them.
//!
//! Matching follows MQTT 3.1.1/5 §4.7: `+` is exactly one level (possibly empty),
//! `#` is the rest including none (`a/#` matches `a`), and a topic starting with
//! `$` is not matched by a wildcard in the first level.
//!
//! A topic that matches but would give an empty sensor or metric (`a//b` under
//! `a/+/b` with sensor `{2}`), or whose template names a level the topic does not
//! have (`{3}` under `a/#` for the topic `a/b`), is *not mapped*: `map` returns
//! `None` and the ingest treats it like a topic outside the subscription. An empty
//! name cannot form a key nor the upstream topic `.../agg/<sensor>/<metric>`.

/// The longest filter MQTT allows, in bytes.
const MAX_FILTER_BYTES: usize = 65_535;

/// A subscription: an MQTT topic filter (with `+` and `#`) and templates for sensor
/// and metric that may use the topic's levels: `{1}` is the first level, `{2}` the
/// second, ...; `{-1}` the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMap {
    filter: String,
    levels: Vec<FilterLevel>,
    sensor: Vec<Segment>,
    metric: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FilterLevel {
    Exact(String),
    Plus,
    Hash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    /// 1-based from the start.
    Level(usize),
    /// 1-based from the end.
    LevelFromEnd(usize),
}

/// Why a filter or a template is refused. Each message says what is wrong and
/// shows a valid example; all are configuration errors.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The filter is the empty string.
    #[error("the topic filter is empty; write e.g. `sensors/+/temperature`")]
    EmptyFilter,
    /// The filter exceeds MQTT's 65535 bytes.
    #[error("the topic filter is {len} bytes long; MQTT allows at most 65535")]
    FilterTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The filter contains a NUL character, which MQTT forbids.
    #[error(
        "the topic filter `{filter}` contains a NUL character; write e.g. `sensors/+/temperature`"
    )]
    NulInFilter {
        /// The filter as given.
        filter: String,
    },
    /// `#` is not the last level.
    #[error("`#` must be the last level of the topic filter `{filter}`; write e.g. `sensors/#`")]
    HashNotLast {
        /// The filter as given.
        filter: String,
    },
    /// A level mixes `+` or `#` with other characters.
    #[error(
        "the level `{level}` of the topic filter `{filter}` mixes a wildcard with other \
         characters; `+` and `#` must fill a whole level, e.g. `sensors/+/temperature`"
    )]
    WildcardInsideLevel {
        /// The filter as given.
        filter: String,
        /// The offending level.
        level: String,
    },
    /// A template is the empty string.
    #[error(
        "the {which} template is empty; write e.g. `{{2}}` (the topic's second level) or a \
         fixed name like `greenhouse`"
    )]
    EmptyTemplate {
        /// `sensor` or `metric`.
        which: &'static str,
    },
    /// A `{...}` that is not `{n}` or `{-n}` with n >= 1.
    #[error(
        "unknown placeholder `{placeholder}` in the {which} template; use e.g. `{{2}}` for the \
         topic's second level (counted from 1) or `{{-1}}` for the last"
    )]
    UnknownPlaceholder {
        /// `sensor` or `metric`.
        which: &'static str,
        /// The placeholder as written, braces included.
        placeholder: String,
    },
    /// A `{` without its `}` or a `}` without its `{`.
    #[error(
        "unbalanced brace in the {which} template `{template}`; placeholders look like \
         `{{2}}` or `{{-1}}`"
    )]
    UnbalancedBrace {
        /// `sensor` or `metric`.
        which: &'static str,
        /// The template as given.
        template: String,
    },
    /// Fixed text containing `/`, `+`, `#` or NUL, which would corrupt the upstream topics.
    #[error(
        "the {which} template `{template}` contains {found:?}, which cannot appear in a {which} \
         name (it is a topic level upstream); write e.g. `kitchen-{{2}}`"
    )]
    ForbiddenChar {
        /// `sensor` or `metric`.
        which: &'static str,
        /// The template as given.
        template: String,
        /// The forbidden character.
        found: char,
    },
    /// A placeholder names a level that no topic matching the filter has.
    #[error(
        "the {which} template uses `{placeholder}` but every topic matching `{filter}` has \
         exactly {levels} levels; e.g. `{{{levels}}}` or `{{-1}}` is the last"
    )]
    LevelOutOfRange {
        /// `sensor` or `metric`.
        which: &'static str,
        /// The placeholder as written, braces included.
        placeholder: String,
        /// The filter as given.
        filter: String,
        /// How many levels matching topics have.
        levels: usize,
    },
}

impl TopicMap {
    /// Validates the filter and both templates. A placeholder beyond the last level
    /// is refused when the filter fixes the number of levels (no `#`); under `#`
    /// it is allowed and topics too short for it are not mapped.
    pub fn new(filter: &str, sensor: &str, metric: &str) -> Result<Self, TopicError> {
        let levels = parse_filter(filter)?;
        let fixed_levels = match levels.last() {
            Some(FilterLevel::Hash) => None,
            _ => Some(levels.len()),
        };
        let sensor = parse_template("sensor", sensor, filter, fixed_levels)?;
        let metric = parse_template("metric", metric, filter, fixed_levels)?;
        Ok(Self {
            filter: filter.to_owned(),
            levels,
            sensor,
            metric,
        })
    }

    /// The filter, as given; what to subscribe to.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The sensor name every topic of this filter maps to, when the template uses no
    /// wildcard level; `None` when it depends on the topic.
    pub fn fixed_sensor(&self) -> Option<String> {
        let mut out = String::new();
        for seg in &self.sensor {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Level(n) => match self.levels.get(n.checked_sub(1)?) {
                    Some(FilterLevel::Exact(t)) => out.push_str(t),
                    _ => return None,
                },
                Segment::LevelFromEnd(_) => return None,
            }
        }
        Some(out)
    }

    /// `(sensor, metric)` for a topic, or `None` when the topic does not match the
    /// filter (MQTT matching rules: `+` one level, `#` the rest, must be last;
    /// `$`-topics not matched by wildcards at the first level) or is not mapped
    /// (see the module documentation).
    pub fn map(&self, topic: &str) -> Option<(String, String)> {
        let levels = self.match_levels(topic)?;
        let sensor = render(&self.sensor, &levels)?;
        let metric = render(&self.metric, &levels)?;
        Some((sensor, metric))
    }

    fn match_levels<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        // A topic name never contains wildcards; one that does is malformed.
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return None;
        }
        if topic.starts_with('$')
            && matches!(
                self.levels.first(),
                Some(FilterLevel::Plus | FilterLevel::Hash)
            )
        {
            return None;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        for (i, level) in self.levels.iter().enumerate() {
            match level {
                // Levels 0..i matched, so the topic has at least i levels: `#` accepts.
                FilterLevel::Hash => return Some(levels),
                FilterLevel::Plus if i < levels.len() => {}
                FilterLevel::Exact(want) if levels.get(i) == Some(&want.as_str()) => {}
                _ => return None,
            }
        }
        (levels.len() == self.levels.len()).then_some(levels)
    }
}

fn parse_filter(filter: &str) -> Result<Vec<FilterLevel>, TopicError> {
    if filter.is_empty() {
        return Err(TopicError::EmptyFilter);
    }
    if filter.len() > MAX_FILTER_BYTES {
        return Err(TopicError::FilterTooLong { len: filter.len() });
    }
    if filter.contains('\0') {
        return Err(TopicError::NulInFilter {
            filter: filter.to_owned(),
        });
    }
    let parts: Vec<&str> = filter.split('/').collect();
    let last = parts.len() - 1;
    let mut levels = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        levels.push(match part {
            "+" => FilterLevel::Plus,
            "#" if i == last => FilterLevel::Hash,
            "#" => {
                return Err(TopicError::HashNotLast {
                    filter: filter.to_owned(),
                });
            }
            _ if part.contains(['+', '#']) => {
                return Err(TopicError::WildcardInsideLevel {
                    filter: filter.to_owned(),
                    level: part.to_owned(),
                });
            }
            _ => FilterLevel::Exact(part.to_owned()),
        });
    }
    Ok(levels)
}

fn parse_template(
    which: &'static str,
    template: &str,
    filter: &str,
    fixed_levels: Option<usize>,
) -> Result<Vec<Segment>, TopicError> {
    if template.is_empty() {
        return Err(TopicError::EmptyTemplate { which });
    }
    let unbalanced = || TopicError::UnbalancedBrace {
        which,
        template: template.to_owned(),
    };
    let mut segments = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(open) = rest.find(['{', '}']) else {
            segments.push(Segment::Text(rest.to_owned()));
            break;
        };
        if rest[open..].starts_with('}') {
            return Err(unbalanced());
        }
        if open > 0 {
            segments.push(Segment::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(unbalanced)?;
        let inner = &after[..close];
        let placeholder = || format!("{{{inner}}}");
        let segment = parse_placeholder(inner).ok_or_else(|| TopicError::UnknownPlaceholder {
            which,
            placeholder: placeholder(),
        })?;
        if let (Segment::Level(n) | Segment::LevelFromEnd(n), Some(levels)) =
            (&segment, fixed_levels)
        {
            if *n > levels {
                return Err(TopicError::LevelOutOfRange {
                    which,
                    placeholder: placeholder(),
                    filter: filter.to_owned(),
                    levels,
                });
            }
        }
        segments.push(segment);
        rest = &after[close + 1..];
    }
    for segment in &segments {
        if let Segment::Text(text) = segment {
            if let Some(found) = text.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
                return Err(TopicError::ForbiddenChar {
                    which,
                    template: template.to_owned(),
                    found,
                });
            }
        }
    }
    Ok(segments)
}

/// `n` or `-n` with `n >= 1`, digits only (no `+`, no spaces).
fn parse_placeholder(inner: &str) -> Option<Segment> {
    let (from_end, digits) = match inner.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, inner),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok().filter(|&n| n >= 1)?;
    Some(if from_end {
        Segment::LevelFromEnd(n)
    } else {
        Segment::Level(n)
    })
}

fn render(template: &[Segment], levels: &[&str]) -> Option<String> {
    let mut out = String::new();
    for segment in template {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Level(n) => out.push_str(levels.get(n - 1)?),
            Segment::LevelFromEnd(n) => out.push_str(levels.get(levels.len().checked_sub(*n)?)?),
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
#[path = "topic_tests.rs"]
mod tests;
