//! Supabase's data API at `/rest/v1` (PostgREST's dialect), so a frontend
//! written against `supabase.from(…)` moves by changing one URL. Being
//! built in steps (issue 19): [`query`] parses the query string; the routes,
//! the translation into the store's reads and writes, and PostgREST's error
//! mapping follow.

pub mod query;
