//! The web app (`/` of `sopflow serve`): server-rendered pages for staff, auditors, process
//! owners and admins over the same handlers as the API.

pub mod charts;
pub mod picture;
