package android.content;
public abstract class Context {
    public abstract Context getApplicationContext();
    public abstract java.io.File getFilesDir();
    public abstract java.io.File getNoBackupFilesDir();
    public abstract android.content.res.AssetManager getAssets();
    public abstract android.content.pm.PackageManager getPackageManager();
    public abstract String getPackageName();
    public abstract java.io.File getCacheDir();
    public abstract android.content.pm.ApplicationInfo getApplicationInfo();
    public final String getString(int resId) { return null; }
}
