//! Integers as JSON Schema defines them: `883` and `883.0` alike (a number
//! with a zero fraction is an integer there, so a client generated from the
//! OpenAPI document may send either). Query strings give text: parsed too.
//! A leaf.

use serde::de::{self, Deserializer, Visitor};

struct Integral;

impl Visitor<'_> for Integral {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // ±2^63 is exactly representable; the range check keeps the cast exact.
        if v.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("{v} is not an integer")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        if let Ok(n) = v.parse::<i64>() {
            return Ok(n);
        }
        match v.parse::<f64>() {
            Ok(f) if f.is_finite() => self.visit_f64(f),
            _ => Err(E::custom(format!("{v:?} is not an integer"))),
        }
    }
}

fn convert<T: TryFrom<i64>, E: de::Error>(v: i64) -> Result<T, E> {
    T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
}

/// A required integer field: `#[serde(deserialize_with = "integral::required")]`.
pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    convert(d.deserialize_any(Integral)?)
}

/// An optional integer field (absent or null = None).
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    struct Maybe;
    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Integral).map(Some)
        }
    }
    d.deserialize_option(Maybe)?.map(convert).transpose()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Probe {
        #[serde(deserialize_with = "super::required")]
        k: usize,
        #[serde(default, deserialize_with = "super::optional")]
        t: Option<i64>,
    }

    #[test]
    fn integers_with_zero_fraction_pass_and_others_fail() {
        let p: Probe = serde_json::from_str(r#"{"k": 883.0, "t": -5}"#).expect("integral");
        assert_eq!((p.k, p.t), (883, Some(-5)));
        let p: Probe = serde_json::from_str(r#"{"k": 3, "t": null}"#).expect("null");
        assert_eq!((p.k, p.t), (3, None));
        let p: Probe = serde_json::from_str(r#"{"k": 3}"#).expect("absent");
        assert_eq!(p.t, None);
        assert!(serde_json::from_str::<Probe>(r#"{"k": 1.5}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"k": -1}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"k": 1e300}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"k": "3"}"#).is_ok());
    }
}
