fn register(_r: &mut swift_plugin_api::Registrar) -> Result<(), swift_plugin_api::PluginError> { Ok(()) }
swift_plugin_api::export_plugin!(register);
