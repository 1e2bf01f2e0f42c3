pub mod dev;
pub mod image;
pub mod prebuild;
pub mod sandbox;
pub mod serve;
pub mod system;
pub mod task;
pub mod workspace;
