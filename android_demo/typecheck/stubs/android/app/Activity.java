package android.app;
public class Activity extends android.content.Context {
    protected void onCreate(android.os.Bundle savedInstanceState) {}
    protected void onDestroy() {}
    public void setContentView(int layoutResID) {}
    public <T extends android.view.View> T findViewById(int id) { return null; }
    public final void runOnUiThread(Runnable action) {}
    public boolean isDestroyed() { return false; }
    public boolean isChangingConfigurations() { return false; }
    public Object getLastNonConfigurationInstance() { return null; }
    public Object onRetainNonConfigurationInstance() { return null; }
    public android.content.Context getApplicationContext() { return null; }
    public java.io.File getFilesDir() { return null; }
    public java.io.File getNoBackupFilesDir() { return null; }
    public android.content.res.AssetManager getAssets() { return null; }
    public android.content.pm.PackageManager getPackageManager() { return null; }
    public String getPackageName() { return null; }
    public java.io.File getCacheDir() { return null; }
    public android.content.pm.ApplicationInfo getApplicationInfo() { return null; }
}
