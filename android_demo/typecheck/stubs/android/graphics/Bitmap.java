package android.graphics;
public final class Bitmap {
    public enum Config { ALPHA_8, RGB_565, ARGB_8888 }
    public static Bitmap createBitmap(int[] colors, int width, int height, Config config) { return null; }
    public static Bitmap createScaledBitmap(Bitmap src, int dstWidth, int dstHeight, boolean filter) { return null; }
}
